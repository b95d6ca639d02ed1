package requant

import (
	"math"

	"github.com/fmoe/fmoe/quant"
)

// Search breadth of the MSE quantizer: clip ranges start from the lowest and
// highest clipSpan present levels, and each is refined by up to lloydSteps
// rounds of nearest-code assignment plus least-squares fit.
const (
	clipSpan   = 3
	lloydSteps = 4
)

// mse picks the stored scale and bias (and codes) that minimize the group's
// squared error as read back (see the package doc).
func mse(g *groupIn, o *groupOut) {
	// Present levels in ascending value order, with their weights.
	var v, w [16]float64
	k := 0
	for q, n := range g.cnt {
		if n != 0 {
			v[k], w[k] = float64(g.v[q]), float64(n)
			k++
		}
	}
	if k == 0 {
		minMax(g, o)
		return
	}
	for i := 1; i < k; i++ { // insertion sort: k ≤ 16, nearly always sorted already
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
			w[j], w[j-1] = w[j-1], w[j]
		}
	}
	if math.IsNaN(v[0]) || math.IsInf(v[0], 0) || math.IsInf(v[k-1], 0) || math.IsNaN(v[k-1]) {
		minMax(g, o)
		return
	}
	vs, ws := v[:k], w[:k]

	bestS, bestB, bestE := 0.0, 0.0, math.Inf(1)
	for i := 0; i < min(clipSpan, k); i++ {
		for j := k - 1; j >= max(k-clipSpan, i); j-- {
			s, b := (vs[j]-vs[i])/3, vs[i]
			prev := math.Inf(1)
			for range lloydSteps {
				var e float64
				s, b, e = fitLS(vs, ws, s, b)
				if e < bestE {
					bestS, bestB, bestE = s, b, e
				}
				if e >= prev {
					break
				}
				prev = e
			}
		}
	}

	// Candidate stored parameters: the bf16 neighbours of the best fit, and
	// the min/max answer. Each is scored with nearest codes as read back.
	minMax(g, o)
	cands := [5][2]uint16{{o.s, o.b}}
	n := 1
	s32, b32 := float32(bestS), float32(bestB)
	for _, s := range bf16Neighbours(s32) {
		for _, b := range bf16Neighbours(b32) {
			cands[n] = [2]uint16{s, b}
			n++
		}
	}
	bestE = math.Inf(1)
	var code [16]byte
	for _, c := range cands[:n] {
		e := nearestCodes(g, c[0], c[1], &code)
		if e < bestE {
			bestE = e
			o.s, o.b, o.code = c[0], c[1], code
		}
	}
}

// fitLS assigns every level its nearest code under (s, b) and returns the
// weighted least-squares scale and bias for that assignment, with its
// squared error.
func fitLS(v, w []float64, s, b float64) (float64, float64, float64) {
	var sw, sj, sjj, sv, sjv, svv float64
	inv := 0.0
	if s > 0 {
		inv = 1 / s
	}
	for i, x := range v {
		j := float64(int(min(max((x-b)*inv+0.5, 0), 3.5)))
		wx := w[i] * x
		sw += w[i]
		sj += w[i] * j
		sjj += w[i] * j * j
		sv += wx
		sjv += wx * j
		svv += wx * x
	}
	det := sw*sjj - sj*sj
	if det > 0 {
		s = (sw*sjv - sj*sv) / det
	} // else one code only: keep the scale, centre the bias
	b = (sv - s*sj) / sw
	// Σw(x - b - s·j)² expanded over the sums.
	e := svv + b*b*sw + s*s*sjj - 2*b*sv - 2*s*sjv + 2*b*s*sj
	return s, b, max(e, 0)
}

// bf16Neighbours returns the bf16 values just below and above x (x itself
// once when it is exactly representable).
func bf16Neighbours(x float32) []uint16 {
	t := quant.F32ToBF16Trunc(x) // toward zero
	if math.Float32bits(x)&0xffff == 0 || t&0x7f80 == 0x7f80 {
		return []uint16{t}
	}
	return []uint16{t, t + 1} // t+1: next away from zero
}

// nearestCodes gives every present level the code whose read-back value
// (float32(j·s)+b with the stored s, b) is closest, and returns the weighted
// squared error.
func nearestCodes(g *groupIn, s16, b16 uint16, code *[16]byte) float64 {
	s, b := quant.BF16ToF32(s16), quant.BF16ToF32(b16)
	var r [4]float64
	for j := range r {
		r[j] = float64(float32(float32(j)*s) + b)
	}
	total := 0.0
	for q, n := range g.cnt {
		code[q] = 0
		if n == 0 {
			continue
		}
		x := float64(g.v[q])
		best, bj := math.Abs(x-r[0]), 0
		for j := 1; j < 4; j++ {
			if d := math.Abs(x - r[j]); d < best {
				best, bj = d, j
			}
		}
		code[q] = byte(bj)
		total += float64(n) * best * best
	}
	return total
}
