package cuda

import (
	"fmt"
	"math"

	"github.com/fmoe/fmoe/runtime"
)

// kvCache holds post-norm post-RoPE keys and raw values, [maxTokens,
// KVHeads*HeadDim]. Its length lives on the host (n, for checks) and in
// device memory (dlen, read by the kernels and advanced by attn_combine), so
// that the launches of a decode step do not change from one token to the next.
type kvCache struct {
	b      *Backend
	k, v   uintptr
	dlen   uintptr
	n, max int
	splits int // attn_split shares per (token, head)
	p      runtime.AttentionParams
}

func (c *kvCache) Len() int { return c.n }
func (c *kvCache) Reset() {
	c.n = 0
	if c.b.closed {
		return
	}
	if err := c.b.d.do(func() error { return c.b.d.memset(c.dlen, 4) }); err != nil && c.b.err == nil {
		c.b.err = err
	}
}

// attnSplits is the number of position shares of attn_split: enough blocks
// to fill the GPU for one decode token, fixed per cache (launches must not
// change with the position); at most 32 (attn_combine's warp reads them).
func attnSplits(sms, heads, maxTokens int) int {
	return max(1, min(cdiv(2*sms, heads), cdiv(maxTokens, 16), 32))
}

// NewKVCache implements runtime.Backend.
func (b *Backend) NewKVCache(p runtime.AttentionParams, maxTokens int) (runtime.KVCache, error) {
	if p.Heads <= 0 || p.KVHeads <= 0 || p.Heads%p.KVHeads != 0 || p.HeadDim <= 0 || p.HeadDim > 512 ||
		p.RotaryDim < 0 || p.RotaryDim > p.HeadDim || p.RotaryDim%2 != 0 || maxTokens <= 0 {
		return nil, fmt.Errorf("%w: attention params %+v, %d tokens", ErrShape, p, maxTokens)
	}
	c := &kvCache{b: b, max: maxTokens, p: p, splits: attnSplits(b.d.sms, p.Heads, maxTokens)}
	n := maxTokens * p.KVHeads * p.HeadDim * 4
	err := b.run(func() (err error) {
		if c.k, err = b.alloc(n); err != nil {
			return err
		}
		if c.dlen, err = b.alloc(4); err != nil {
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
	err = b.run(func() error {
		q, err := b.scratchBuf("attn_q", T*H*HD*4)
		if err != nil {
			return err
		}
		NS := c.splits
		if T > 1 {
			// a prompt step: one share per token and head. Its tokens'
			// blocks fill the GPU (9 shares per token and head made a
			// 128-token step of the 397B shapes 36864 blocks of ~14
			// positions each), and a position's result does not depend on
			// the step's length (TestHFParity compares prompts of
			// different lengths to 1e-5).
			NS = 1
		}
		part, err := b.scratchBuf("attn_part", T*H*NS*(HD+2)*4)
		if err != nil {
			return err
		}
		th := cdiv(HD, 32) * 32
		if err := b.d.launch(b.fn["attn_prep"], grid1(T*(H+KVH)), [3]int{th, 1, 1}, (HD+32)*4,
			ts[1].p, ts[2].p, ts[3].p, c.k, c.v, q, qn, kn, H, KVH, HD, p.RotaryDim, c.dlen, float32(p.RopeTheta), p.Eps); err != nil {
			return err
		}
		if err := b.d.launch(b.fn["attn_split"], [3]int{T * H, NS, 1}, [3]int{128, 1, 1}, 4*(HD+2)*4,
			q, c.k, c.v, part, c.dlen, H, KVH, HD, float32(1/math.Sqrt(float64(HD)))); err != nil {
			return err
		}
		return b.d.launch(b.fn["attn_combine"], grid1(T*H), [3]int{min(256, th), 1, 1}, 0,
			part, ts[1].p, ts[0].p, c.dlen, H, HD, NS)
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
		if name := deltaCols(T, p.KeyDim, VD); name != "" {
			// A prompt step: conv over token groups; q, k normalised and the
			// gates once per token; the rule one warp per 4 columns; then the
			// gated RMSNorm.
			gates, err := b.scratchBuf("delta_gates", T*VH*8)
			if err != nil {
				return err
			}
			if err := b.d.launch(b.fn["delta_conv_t"], grid1(cdiv(C, 32)), [3]int{32, min(8, T), 1}, 0, ts[1].p, cw, s.conv, out, T, C, p.ConvKernel); err != nil {
				return err
			}
			if err := b.d.launch(b.fn["delta_qkg"], grid1(T), [3]int{256, 1, 1}, 0, out, ts[3].p, ts[4].p, dt, al, gates, T, p.KeyHeads, VH, p.KeyDim, VD); err != nil {
				return err
			}
			if err := b.d.launch(b.fn[name], grid1(VH*VD/16), [3]int{128, 1, 1}, deltaColsSmem(p.KeyDim), out, gates, s.s, ts[0].p, T, p.KeyHeads, VH, VD); err != nil {
				return err
			}
			return b.d.launch(b.fn["delta_gnorm"], grid1(cdiv(T*VH, 4)), [3]int{128, 1, 1}, 0, ts[0].p, ts[2].p, nw, T*VH, VD, p.Eps)
		}
		if err := b.d.launch(b.fn["delta_conv"], grid1(cdiv(C, 128)), [3]int{128, 1, 1}, 0, ts[1].p, cw, s.conv, out, T, C, p.ConvKernel); err != nil {
			return err
		}
		if rows, rg := delta2Rows(p.KeyDim, VD); rows > 0 {
			return b.d.launch(b.fn[fmt.Sprintf("delta_rule2_%d", rows)], grid1(VH), [3]int{rg * VD, 1, 1}, (2*p.KeyDim+rg*VD+32)*4,
				out, ts[2].p, ts[3].p, ts[4].p, s.s, dt, al, nw, ts[0].p, T, p.KeyHeads, VH, p.KeyDim, VD, p.Eps)
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

// delta2Rows picks the register-state delta kernel for a head of KD×VD: RG
// row groups of VD threads (about 512 threads a block), rows = KD/RG state
// rows per thread (a compiled variant: 1 … 32). rows 0: no variant fits (the
// shared-memory kernel delta_rule runs instead).
func delta2Rows(KD, VD int) (rows, rg int) {
	if disableDelta2 || VD > 512 || KD <= 0 {
		return 0, 0
	}
	rg = 1
	for rg*2*VD <= 512 && rg*2 <= KD {
		rg *= 2
	}
	if KD%rg != 0 {
		return 0, 0
	}
	rows = KD / rg
	for _, r := range []int{1, 2, 4, 8, 16, 32} {
		if r == rows && (2*KD+rg*VD+32)*4 <= 48<<10 {
			return rows, rg
		}
	}
	return 0, 0
}

// disableDelta2 makes DeltaNet use the shared-memory kernel (tests compare the two).
var disableDelta2 = false

// disableDeltaCols keeps prompt steps on the one-block-per-head kernels
// (delta_conv, delta_rule2); FMOE_CUDA_DELTA_COLS=0 sets it.
var disableDeltaCols = false

// deltaColsMin is the smallest step that runs on delta_cols: decode steps
// keep delta_rule2 (one launch, one block per head, inside the decode
// graphs); where the two meet between 1 and 8 tokens was not measured.
const deltaColsMin = 8

// delta_cols variants: KD = 32 (delta_cols_4, TestConformance's DeltaNet at
// 9 tokens) and 128 (delta_cols_16, TestMixersLarge) run in the tests; 64
// and 256 are compiled but not exercised by a test.

// deltaColsSmem is delta_cols' shared memory for heads of KD rows: two
// buffers of TC tokens' q, k (KD each), 16 values and the gates.
func deltaColsSmem(KD int) int {
	tc := 16
	if KD >= 256 {
		tc = 8
	}
	return 2 * (2*tc*KD + tc*16 + 2*tc) * 4
}

// deltaCols names the delta_cols variant for a step of T tokens of KD×VD
// heads, or "" where the step keeps the one-block-per-head kernels.
func deltaCols(T, KD, VD int) string {
	if disableDelta2 || disableDeltaCols || T < deltaColsMin || VD%16 != 0 {
		return ""
	}
	switch KD {
	case 32, 64, 128, 256:
		return fmt.Sprintf("delta_cols_%d", KD/8)
	}
	return ""
}
