package cpu

import (
	"fmt"
	"math"

	"github.com/fmoe/fmoe/runtime"
)

// kvCache holds post-norm, post-RoPE keys and raw values, [max, KVHeads*HeadDim].
type kvCache struct {
	p    runtime.AttentionParams
	k, v []float32
	n    int
	max  int
}

func (c *kvCache) Len() int { return c.n }
func (c *kvCache) Reset()   { c.n = 0 }

// NewKVCache implements runtime.Backend.
func (b *Backend) NewKVCache(p runtime.AttentionParams, maxTokens int) (runtime.KVCache, error) {
	if err := checkAttn(p); err != nil {
		return nil, err
	}
	if maxTokens <= 0 {
		return nil, fmt.Errorf("%w: KV cache of %d tokens", ErrShape, maxTokens)
	}
	w := p.KVHeads * p.HeadDim
	return &kvCache{p: p, k: make([]float32, maxTokens*w), v: make([]float32, maxTokens*w), max: maxTokens}, nil
}

func checkAttn(p runtime.AttentionParams) error {
	if p.Heads <= 0 || p.KVHeads <= 0 || p.HeadDim <= 0 || p.Heads%p.KVHeads != 0 ||
		p.RotaryDim < 0 || p.RotaryDim > p.HeadDim || p.RotaryDim%2 != 0 {
		return fmt.Errorf("%w: attention params %+v", ErrShape, p)
	}
	return nil
}

// ropeTable returns cos/sin [half] for position pos the way HF computes them
// in float32: inv_freq = 1/θ^(2i/rot), angle = float32(pos)·inv_freq.
func ropeTable(cos, sin []float32, rot, pos int, theta float64) {
	for i := range cos {
		e := float32(2*i) / float32(rot)
		inv := 1 / float32(math.Pow(theta, float64(e)))
		a := float32(pos) * inv
		cos[i] = float32(math.Cos(float64(a)))
		sin[i] = float32(math.Sin(float64(a)))
	}
}

func rope(v, cos, sin []float32) {
	half := len(cos)
	for i := 0; i < half; i++ {
		u, w := v[i], v[i+half]
		v[i] = u*cos[i] - w*sin[i]
		v[i+half] = w*cos[i] + u*sin[i]
	}
}

// Attention implements runtime.Backend.
func (b *Backend) Attention(dst, qg, k, v runtime.Tensor, kv runtime.KVCache, qNorm, kNorm runtime.Weight, p runtime.AttentionParams) error {
	ts := make([]*tensor, 4)
	for i, x := range []runtime.Tensor{dst, qg, k, v} {
		t, err := tens(x)
		if err != nil {
			return err
		}
		ts[i] = t
	}
	d, q, kt, vt := ts[0], ts[1], ts[2], ts[3]
	c, ok := kv.(*kvCache)
	if !ok {
		return fmt.Errorf("cpu: KV cache %T not from the CPU backend", kv)
	}
	qn, err := wt(qNorm)
	if err != nil {
		return err
	}
	kn, err := wt(kNorm)
	if err != nil {
		return err
	}
	if err := checkAttn(p); err != nil {
		return err
	}
	H, KV, D := p.Heads, p.KVHeads, p.HeadDim
	T := q.rows
	if q.cols != H*2*D || kt.cols != KV*D || vt.cols != KV*D || d.cols != H*D ||
		kt.rows != T || vt.rows != T || d.rows != T || qn.in != D || kn.in != D || qn.w.F == nil || kn.w.F == nil {
		return fmt.Errorf("%w: attention operands do not match %+v", ErrShape, p)
	}
	if c.p != p {
		return fmt.Errorf("%w: KV cache made for %+v used with %+v", ErrShape, c.p, p)
	}
	if c.n+T > c.max {
		return fmt.Errorf("%w: KV cache holds %d of %d tokens, %d more do not fit", ErrShape, c.n, c.max, T)
	}
	pos0 := c.n
	half := p.RotaryDim / 2
	cos, sin := make([]float32, half), make([]float32, half)
	qs := make([]float32, T*H*D) // normed, rotated queries
	kw := KV * D
	for t := 0; t < T; t++ {
		ropeTable(cos, sin, p.RotaryDim, pos0+t, p.RopeTheta)
		for h := 0; h < H; h++ {
			qh := qs[(t*H+h)*D : (t*H+h+1)*D]
			rmsNorm(qh, q.d[t*H*2*D+h*2*D:t*H*2*D+h*2*D+D], qn.vec(), p.Eps)
			rope(qh, cos, sin)
		}
		kc := c.k[(pos0+t)*kw : (pos0+t+1)*kw]
		rmsNorm(kc, kt.row(t), kn.vec(), p.Eps)
		for h := 0; h < KV; h++ {
			rope(kc[h*D:(h+1)*D], cos, sin)
		}
		copy(c.v[(pos0+t)*kw:(pos0+t+1)*kw], vt.row(t))
	}
	c.n += T
	scale := float32(1 / math.Sqrt(float64(D)))
	group := H / KV
	b.parallel(T*H, func(lo, hi int) {
		sc := make([]float32, pos0+T)
		acc := make([]float64, D)
		for job := lo; job < hi; job++ {
			t, h := job/H, job%H
			kvh := h / group
			qh := qs[(t*H+h)*D : (t*H+h+1)*D]
			n := pos0 + t + 1
			mx := float32(math.Inf(-1))
			for s := 0; s < n; s++ {
				sc[s] = dot(qh, c.k[s*kw+kvh*D:s*kw+(kvh+1)*D]) * scale
				mx = max(mx, sc[s])
			}
			var sum float64
			for s := 0; s < n; s++ {
				e := math.Exp(float64(sc[s] - mx))
				sc[s] = float32(e)
				sum += e
			}
			clear(acc)
			for s := 0; s < n; s++ {
				pr := float64(sc[s])
				vs := c.v[s*kw+kvh*D : s*kw+(kvh+1)*D]
				for i, x := range vs {
					acc[i] += pr * float64(x)
				}
			}
			out := d.d[(t*H+h)*D : (t*H+h+1)*D]
			gate := q.d[t*H*2*D+h*2*D+D : t*H*2*D+h*2*D+2*D]
			for i := range out {
				out[i] = float32(acc[i]/sum) * sigmoid32(gate[i])
			}
		}
	})
	return nil
}
