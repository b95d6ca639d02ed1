package cpu

import (
	"fmt"
	"math"

	"github.com/fmoe/fmoe/runtime"
)

// deltaState is one GatedDeltaNet layer's state: the raw q‖k‖v projections
// of the last ConvKernel-1 tokens and, per value head, S[key][value] (HF's
// orientation), both float32.
type deltaState struct {
	p    runtime.DeltaParams
	conv []float32 // [(Kernel-1), ConvDim], oldest first
	s    []float32 // [ValueHeads][KeyDim][ValueDim]
}

func (s *deltaState) Reset() {
	clear(s.conv)
	clear(s.s)
}

func checkDelta(p runtime.DeltaParams) error {
	if p.KeyHeads <= 0 || p.ValueHeads <= 0 || p.KeyDim <= 0 || p.ValueDim <= 0 || p.ConvKernel <= 0 ||
		p.ValueHeads%p.KeyHeads != 0 {
		return fmt.Errorf("%w: delta-net params %+v", ErrShape, p)
	}
	return nil
}

// NewDeltaState implements runtime.Backend.
func (b *Backend) NewDeltaState(p runtime.DeltaParams) (runtime.DeltaState, error) {
	if err := checkDelta(p); err != nil {
		return nil, err
	}
	return &deltaState{p: p,
		conv: make([]float32, (p.ConvKernel-1)*p.ConvDim()),
		s:    make([]float32, p.ValueHeads*p.KeyDim*p.ValueDim)}, nil
}

func softplus(v float64) float64 {
	if v > 20 {
		return v
	}
	return math.Log1p(math.Exp(v))
}

// DeltaNet implements runtime.Backend.
func (b *Backend) DeltaNet(dst, qkv, z, bt, at runtime.Tensor, st runtime.DeltaState, conv, dtBias, aLog, norm runtime.Weight, p runtime.DeltaParams) error {
	ts := make([]*tensor, 5)
	for i, x := range []runtime.Tensor{dst, qkv, z, bt, at} {
		t, err := tens(x)
		if err != nil {
			return err
		}
		ts[i] = t
	}
	d, m, zt, beta, alpha := ts[0], ts[1], ts[2], ts[3], ts[4]
	s, ok := st.(*deltaState)
	if !ok {
		return fmt.Errorf("cpu: delta state %T not from the CPU backend", st)
	}
	ws := make([]*weight, 4)
	for i, x := range []runtime.Weight{conv, dtBias, aLog, norm} {
		w, err := wt(x)
		if err != nil {
			return err
		}
		if w.w.F == nil {
			return fmt.Errorf("%w: delta-net weight %s must be dense float32", ErrShape, w.name)
		}
		ws[i] = w
	}
	cw, dt, al, nw := ws[0], ws[1], ws[2], ws[3]
	if err := checkDelta(p); err != nil {
		return err
	}
	C, K := p.ConvDim(), p.ConvKernel
	Hk, Hv, Dk, Dv := p.KeyHeads, p.ValueHeads, p.KeyDim, p.ValueDim
	T := m.rows
	if m.cols != C || zt.cols != Hv*Dv || beta.cols != Hv || alpha.cols != Hv || d.cols != Hv*Dv ||
		zt.rows != T || beta.rows != T || alpha.rows != T || d.rows != T ||
		cw.out != C || cw.in != K || dt.out*dt.in != Hv || al.out*al.in != Hv || nw.in != Dv {
		return fmt.Errorf("%w: delta-net operands do not match %+v", ErrShape, p)
	}
	if s.p != p {
		return fmt.Errorf("%w: delta state made for %+v used with %+v", ErrShape, s.p, p)
	}

	// Causal depthwise conv + SiLU over history (state) ‖ new tokens.
	y := make([]float32, T*C)
	hist := append(append(make([]float32, 0, (K-1+T)*C), s.conv...), m.d...) // [(K-1+T), C]
	b.parallel(C, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			wc := cw.w.F[c*K : (c+1)*K]
			for t := 0; t < T; t++ {
				var acc float32
				for j := 0; j < K; j++ {
					acc += wc[j] * hist[(t+j)*C+c]
				}
				y[t*C+c] = silu32(acc)
			}
		}
	})
	copy(s.conv, hist[T*C:])

	group := Hv / Hk
	qScale := float32(1 / math.Sqrt(float64(Dk)))
	b.parallel(Hv, func(lo, hi int) {
		q, k := make([]float32, Dk), make([]float32, Dk)
		o := make([]float32, Dv)
		for h := lo; h < hi; h++ {
			kh := h / group
			S := s.s[h*Dk*Dv : (h+1)*Dk*Dv]
			for t := 0; t < T; t++ {
				yt := y[t*C : (t+1)*C]
				l2norm(q, yt[kh*Dk:(kh+1)*Dk], qScale)
				l2norm(k, yt[Hk*Dk+kh*Dk:Hk*Dk+(kh+1)*Dk], 1)
				v := yt[2*Hk*Dk+h*Dv : 2*Hk*Dk+(h+1)*Dv]
				bv := sigmoid32(beta.d[t*Hv+h])
				g := -math.Exp(float64(al.w.F[h])) * softplus(float64(alpha.d[t*Hv+h])+float64(dt.w.F[h]))
				decay := float32(math.Exp(g))
				for i := range S {
					S[i] *= decay
				}
				// delta_j = (v_j - Σ_i S[i,j] k_i)·β, computed row-wise into o.
				clear(o)
				for i := 0; i < Dk; i++ {
					ki := k[i]
					row := S[i*Dv : (i+1)*Dv]
					for j, sv := range row {
						o[j] += sv * ki
					}
				}
				for j := range o {
					o[j] = (v[j] - o[j]) * bv
				}
				for i := 0; i < Dk; i++ {
					ki := k[i]
					row := S[i*Dv : (i+1)*Dv]
					for j := range row {
						row[j] += ki * o[j]
					}
				}
				out := d.d[t*Hv*Dv+h*Dv : t*Hv*Dv+(h+1)*Dv]
				clear(out)
				for i := 0; i < Dk; i++ {
					qi := q[i]
					row := S[i*Dv : (i+1)*Dv]
					for j, sv := range row {
						out[j] += sv * qi
					}
				}
				rmsNorm(out, out, nw.vec(), p.Eps)
				zr := zt.d[t*Hv*Dv+h*Dv : t*Hv*Dv+(h+1)*Dv]
				for j := range out {
					out[j] *= silu32(zr[j])
				}
			}
		}
	})
	return nil
}

// l2norm writes src/sqrt(Σsrc²+1e-6)·scale into dst.
func l2norm(dst, src []float32, scale float32) {
	var ss float64
	for _, v := range src {
		ss += float64(v) * float64(v)
	}
	inv := float32(1/math.Sqrt(ss+1e-6)) * scale
	for i, v := range src {
		dst[i] = v * inv
	}
}
