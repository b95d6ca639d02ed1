package cuda

import (
	"fmt"
	"math"

	"github.com/fmoe/fmoe/runtime"
)

// kvCache holds post-norm post-RoPE keys and raw values, [maxTokens, KVHeads*HeadDim].
type kvCache struct {
	b      *Backend
	k, v   uintptr
	n, max int
	p      runtime.AttentionParams
}

func (c *kvCache) Len() int { return c.n }
func (c *kvCache) Reset()   { c.n = 0 }

// NewKVCache implements runtime.Backend.
func (b *Backend) NewKVCache(p runtime.AttentionParams, maxTokens int) (runtime.KVCache, error) {
	if p.Heads <= 0 || p.KVHeads <= 0 || p.Heads%p.KVHeads != 0 || p.HeadDim <= 0 || p.HeadDim > 512 ||
		p.RotaryDim < 0 || p.RotaryDim > p.HeadDim || p.RotaryDim%2 != 0 || maxTokens <= 0 {
		return nil, fmt.Errorf("%w: attention params %+v, %d tokens", ErrShape, p, maxTokens)
	}
	c := &kvCache{b: b, max: maxTokens, p: p}
	n := maxTokens * p.KVHeads * p.HeadDim * 4
	err := b.run(func() (err error) {
		if c.k, err = b.alloc(n); err != nil {
			return err
		}
		c.v, err = b.alloc(n)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Attention implements runtime.Backend.
func (b *Backend) Attention(dst, qg, k, v runtime.Tensor, cache runtime.KVCache, qNorm, kNorm runtime.Weight, p runtime.AttentionParams) error {
	ts, err := tensors(dst, qg, k, v)
	if err != nil {
		return err
	}
	ws, err := weights(qNorm, kNorm)
	if err != nil {
		return err
	}
	c, ok := cache.(*kvCache)
	if !ok || c.b != b {
		return fmt.Errorf("%w: kv cache %T", ErrForeign, cache)
	}
	T := ts[1].rows
	H, KVH, HD := p.Heads, p.KVHeads, p.HeadDim
	if c.p.Heads != H || c.p.KVHeads != KVH || c.p.HeadDim != HD ||
		ts[0].rows != T || ts[0].cols != H*HD || ts[1].cols != 2*H*HD ||
		ts[2].rows != T || ts[2].cols != KVH*HD || ts[3].rows != T || ts[3].cols != KVH*HD {
		return fmt.Errorf("%w: attention dst %dx%d qg %dx%d k %dx%d v %dx%d for %+v", ErrShape,
			ts[0].rows, ts[0].cols, ts[1].rows, ts[1].cols, ts[2].rows, ts[2].cols, ts[3].rows, ts[3].cols, p)
	}
	if c.n+T > c.max {
		return fmt.Errorf("%w: kv cache of %d tokens holds %d, %d more do not fit", ErrShape, c.max, c.n, T)
	}
	qn, err := vector(ws[0], HD)
	if err != nil {
		return err
	}
	kn, err := vector(ws[1], HD)
	if err != nil {
		return err
	}
	pos0 := c.n
	err = b.run(func() error {
		q, err := b.scratchBuf("attn_q", T*H*HD*4)
		if err != nil {
			return err
		}
		th := cdiv(HD, 32) * 32
		if err := b.d.launch(b.fn["attn_prep"], grid1(T*(H+KVH)), [3]int{th, 1, 1}, (HD+32)*4,
			ts[1].p, ts[2].p, ts[3].p, c.k, c.v, q, qn, kn, H, KVH, HD, p.RotaryDim, pos0, float32(p.RopeTheta), p.Eps); err != nil {
			return err
		}
		return b.d.launch(b.fn["attn"], grid1(T*H), [3]int{128, 1, 1}, 4*(HD+2)*4,
			q, ts[1].p, c.k, c.v, ts[0].p, H, KVH, HD, pos0, float32(1/math.Sqrt(float64(HD))))
	})
	if err != nil {
		return err
	}
	c.n += T
	return nil
}

// deltaState is one GatedDeltaNet layer's conv state [(K-1), ConvDim] and
// recurrent state [ValueHeads, KeyDim, ValueDim] (fp32).
type deltaState struct {
	b         *Backend
	conv, s   uintptr
	convN, sN int
	p         runtime.DeltaParams
}

func (s *deltaState) Reset() {
	if s.b.closed {
		return
	}
	err := s.b.d.do(func() error {
		if err := s.b.d.memset(s.conv, s.convN); err != nil {
			return err
		}
		return s.b.d.memset(s.s, s.sN)
	})
	if err != nil && s.b.err == nil {
		s.b.err = err
	}
}

// NewDeltaState implements runtime.Backend.
func (b *Backend) NewDeltaState(p runtime.DeltaParams) (runtime.DeltaState, error) {
	if p.KeyHeads <= 0 || p.ValueHeads <= 0 || p.ValueHeads%p.KeyHeads != 0 || p.KeyDim <= 0 || p.ValueDim <= 0 ||
		p.ValueDim > 1024 || p.ConvKernel < 1 || p.ConvKernel > 8 {
		return nil, fmt.Errorf("%w: delta params %+v", ErrShape, p)
	}
	smem := (p.KeyDim*p.ValueDim + 2*p.KeyDim + 32) * 4
	if smem > max(b.d.smemOpt, 48<<10) {
		return nil, fmt.Errorf("%w: delta state of %d bytes per head exceeds shared memory (%d)", ErrShape, smem, b.d.smemOpt)
	}
	s := &deltaState{b: b, p: p, convN: max(1, (p.ConvKernel-1)*p.ConvDim()) * 4, sN: p.ValueHeads * p.KeyDim * p.ValueDim * 4}
	err := b.run(func() (err error) {
		if s.conv, err = b.alloc(s.convN); err != nil {
			return err
		}
		s.s, err = b.alloc(s.sN)
		return err
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// DeltaNet implements runtime.Backend.
func (b *Backend) DeltaNet(dst, qkv, z, bt, a runtime.Tensor, st runtime.DeltaState, conv, dtBias, aLog, norm runtime.Weight, p runtime.DeltaParams) error {
	ts, err := tensors(dst, qkv, z, bt, a)
	if err != nil {
		return err
	}
	ws, err := weights(conv, dtBias, aLog, norm)
	if err != nil {
		return err
	}
	s, ok := st.(*deltaState)
	if !ok || s.b != b {
		return fmt.Errorf("%w: delta state %T", ErrForeign, st)
	}
	T, C, VH, VD := ts[1].rows, p.ConvDim(), p.ValueHeads, p.ValueDim
	if s.p != p || ts[1].cols != C || ts[0].rows != T || ts[0].cols != VH*VD || ts[2].rows != T || ts[2].cols != VH*VD ||
		ts[3].rows != T || ts[3].cols != VH || ts[4].rows != T || ts[4].cols != VH {
		return fmt.Errorf("%w: deltanet for %+v: dst %dx%d qkv %dx%d z %dx%d b %dx%d a %dx%d", ErrShape, p,
			ts[0].rows, ts[0].cols, ts[1].rows, ts[1].cols, ts[2].rows, ts[2].cols, ts[3].rows, ts[3].cols, ts[4].rows, ts[4].cols)
	}
	cw, err := vector(ws[0], C*p.ConvKernel)
	if err != nil {
		return err
	}
	dt, err := vector(ws[1], VH)
	if err != nil {
		return err
	}
	al, err := vector(ws[2], VH)
	if err != nil {
		return err
	}
	nw, err := vector(ws[3], VD)
	if err != nil {
		return err
	}
	return b.run(func() error {
		out, err := b.scratchBuf("delta_conv", T*C*4)
		if err != nil {
			return err
		}
		if err := b.d.launch(b.fn["delta_conv"], grid1(cdiv(C, 128)), [3]int{128, 1, 1}, 0, ts[1].p, cw, s.conv, out, T, C, p.ConvKernel); err != nil {
			return err
		}
		smem := (p.KeyDim*VD + 2*p.KeyDim + 32) * 4
		f := b.fn["delta_rule"]
		if smem > 48<<10 {
			if err := b.d.setMaxDynamicShared(f, smem); err != nil {
				return err
			}
		}
		return b.d.launch(f, grid1(VH), [3]int{cdiv(VD, 32) * 32, 1, 1}, smem,
			out, ts[2].p, ts[3].p, ts[4].p, s.s, dt, al, nw, ts[0].p, T, p.KeyHeads, VH, p.KeyDim, VD, p.Eps)
	})
}
