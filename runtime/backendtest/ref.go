package backendtest

import (
	"math"
	"sort"

	"github.com/fmoe/fmoe/runtime"
)

// The references below compute in float64 from float64 copies of the inputs.
// Matrices are row-major; x is [T, n].

func refMatMul(w []float64, out, in int, x []float64, T int) []float64 {
	y := make([]float64, T*out)
	for t := 0; t < T; t++ {
		for r := 0; r < out; r++ {
			var s float64
			for c := 0; c < in; c++ {
				s += w[r*in+c] * x[t*in+c]
			}
			y[t*out+r] = s
		}
	}
	return y
}

// refRMSNorm normalises each group of len(w) values: x/sqrt(mean(x²)+eps)·w.
func refRMSNorm(x []float64, w []float64, eps float64) []float64 {
	n := len(w)
	y := make([]float64, len(x))
	for g := 0; g+n <= len(x); g += n {
		var ss float64
		for i := 0; i < n; i++ {
			ss += x[g+i] * x[g+i]
		}
		inv := 1 / math.Sqrt(ss/float64(n)+eps)
		for i := 0; i < n; i++ {
			y[g+i] = x[g+i] * inv * w[i]
		}
	}
	return y
}

func sigmoid(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
func silu(v float64) float64    { return v * sigmoid(v) }

func softplus(v float64) float64 {
	if v > 20 {
		return v
	}
	return math.Log1p(math.Exp(v))
}

// refRoPE rotates the first rot dims of head vector v (rotate-half pairing).
func refRoPE(v []float64, rot, pos int, theta float64) {
	half := rot / 2
	for i := 0; i < half; i++ {
		a := float64(pos) * math.Pow(theta, -2*float64(i)/float64(rot))
		c, s := math.Cos(a), math.Sin(a)
		u, w := v[i], v[i+half]
		v[i] = u*c - w*s
		v[i+half] = w*c + u*s
	}
}

// refAttention runs gated attention over a whole sequence of N tokens at
// positions 0..N-1 (one-shot, causal).
func refAttention(qg, k, v []float64, N int, qn, kn []float64, p runtime.AttentionParams) []float64 {
	H, KV, D := p.Heads, p.KVHeads, p.HeadDim
	eps := float64(p.Eps)
	q := make([]float64, N*H*D)
	gate := make([]float64, N*H*D)
	K := make([]float64, N*KV*D)
	for t := 0; t < N; t++ {
		for h := 0; h < H; h++ {
			src := qg[t*H*2*D+h*2*D:]
			qh := refRMSNorm(src[:D], qn, eps)
			refRoPE(qh, p.RotaryDim, t, p.RopeTheta)
			copy(q[(t*H+h)*D:], qh)
			copy(gate[(t*H+h)*D:], src[D:2*D])
		}
		for h := 0; h < KV; h++ {
			kh := refRMSNorm(k[(t*KV+h)*D:(t*KV+h+1)*D], kn, eps)
			refRoPE(kh, p.RotaryDim, t, p.RopeTheta)
			copy(K[(t*KV+h)*D:], kh)
		}
	}
	out := make([]float64, N*H*D)
	scale := 1 / math.Sqrt(float64(D))
	for t := 0; t < N; t++ {
		for h := 0; h < H; h++ {
			kvh := h / (H / KV)
			qh := q[(t*H+h)*D : (t*H+h+1)*D]
			sc := make([]float64, t+1)
			mx := math.Inf(-1)
			for s := 0; s <= t; s++ {
				var d float64
				for i := 0; i < D; i++ {
					d += qh[i] * K[(s*KV+kvh)*D+i]
				}
				sc[s] = d * scale
				mx = math.Max(mx, sc[s])
			}
			var sum float64
			for s := range sc {
				sc[s] = math.Exp(sc[s] - mx)
				sum += sc[s]
			}
			for i := 0; i < D; i++ {
				var o float64
				for s := 0; s <= t; s++ {
					o += sc[s] / sum * v[(s*KV+kvh)*D+i]
				}
				out[(t*H+h)*D+i] = o * sigmoid(gate[(t*H+h)*D+i])
			}
		}
	}
	return out
}

// refDeltaNet runs the GatedDeltaNet mixer over N tokens from zero state,
// token by token, in HF's formulation (state S[key][value]).
func refDeltaNet(qkv, z, b, a []float64, N int, conv, dtBias, aLog, norm []float64, p runtime.DeltaParams) []float64 {
	C, Kk := p.ConvDim(), p.ConvKernel
	Hk, Hv, Dk, Dv := p.KeyHeads, p.ValueHeads, p.KeyDim, p.ValueDim
	S := make([]float64, Hv*Dk*Dv)
	out := make([]float64, N*Hv*Dv)
	y := make([]float64, C)
	for t := 0; t < N; t++ {
		for c := 0; c < C; c++ {
			var s float64
			for j := 0; j < Kk; j++ {
				src := t - (Kk - 1) + j
				if src >= 0 {
					s += conv[c*Kk+j] * qkv[src*C+c]
				}
			}
			y[c] = silu(s)
		}
		for h := 0; h < Hv; h++ {
			kh := h / (Hv / Hk)
			q := append([]float64(nil), y[kh*Dk:(kh+1)*Dk]...)
			k := append([]float64(nil), y[Hk*Dk+kh*Dk:Hk*Dk+(kh+1)*Dk]...)
			v := y[2*Hk*Dk+h*Dv : 2*Hk*Dk+(h+1)*Dv]
			l2 := func(u []float64) {
				var ss float64
				for _, e := range u {
					ss += e * e
				}
				inv := 1 / math.Sqrt(ss+1e-6)
				for i := range u {
					u[i] *= inv
				}
			}
			l2(q)
			l2(k)
			for i := range q {
				q[i] /= math.Sqrt(float64(Dk))
			}
			beta := sigmoid(b[t*Hv+h])
			g := -math.Exp(aLog[h]) * softplus(a[t*Hv+h]+dtBias[h])
			alpha := math.Exp(g)
			st := S[h*Dk*Dv : (h+1)*Dk*Dv]
			for i := range st {
				st[i] *= alpha
			}
			o := make([]float64, Dv)
			for j := 0; j < Dv; j++ {
				var m float64
				for i := 0; i < Dk; i++ {
					m += st[i*Dv+j] * k[i]
				}
				d := (v[j] - m) * beta
				for i := 0; i < Dk; i++ {
					st[i*Dv+j] += k[i] * d
				}
			}
			for j := 0; j < Dv; j++ {
				for i := 0; i < Dk; i++ {
					o[j] += st[i*Dv+j] * q[i]
				}
			}
			n := refRMSNorm(o, norm, float64(p.Eps))
			for j := 0; j < Dv; j++ {
				out[(t*Hv+h)*Dv+j] = n[j] * silu(z[(t*Hv+h)*Dv+j])
			}
		}
	}
	return out
}

// refRoute returns, per token, the top-K experts by softmax probability
// (ties to the lower id) and their renormalised weights, plus the gap
// between the K-th and (K+1)-th probability (for tie avoidance).
func refRoute(logits []float64, E, K int) (ids []int, w []float64, gap float64) {
	mx := math.Inf(-1)
	for _, l := range logits {
		mx = math.Max(mx, l)
	}
	p := make([]float64, E)
	var sum float64
	for e, l := range logits {
		p[e] = math.Exp(l - mx)
		sum += p[e]
	}
	order := make([]int, E)
	for e := range order {
		order[e] = e
		p[e] /= sum
	}
	sort.SliceStable(order, func(i, j int) bool { return p[order[i]] > p[order[j]] })
	ids = order[:K]
	var s float64
	for _, e := range ids {
		s += p[e]
	}
	for _, e := range ids {
		w = append(w, p[e]/s)
	}
	gap = 1.0
	if K < E {
		gap = p[order[K-1]] - p[order[K]]
	}
	return ids, w, gap
}

// refExpert applies one SwiGLU expert to x (len hidden).
func refExpert(gate, up, down []float64, hidden, inter int, x []float64) []float64 {
	g := refMatMul(gate, inter, hidden, x, 1)
	u := refMatMul(up, inter, hidden, x, 1)
	for i := range g {
		g[i] = silu(g[i]) * u[i]
	}
	return refMatMul(down, hidden, inter, g, 1)
}
