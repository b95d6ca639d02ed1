//go:build !amd64 || noasm || !gc

package quant

// mvArgs holds what one MatVec call shares between its workers.
type mvArgs struct {
	m       *Matrix
	x, sumx []float32
	kern    int // always 0: the Go kernels
}

func newMVArgs(m *Matrix, x []float32) *mvArgs {
	return &mvArgs{m: m, x: x, sumx: groupSums(x, m.GroupSize)}
}

// rows computes rows [lo, hi) of the product into dst[:hi-lo]. The reference
// loop, for each row r:
//
//	for g := range groups {
//		acc := Σ_{c in group g} float32(q[r,c]) * x[c]
//		dst[r] += scale[r,g]*acc + bias[r,g]*Σ_{c in group g} x[c]
//	}
func (a *mvArgs) rows(dst []float32, lo, hi int) {
	for r := lo; r < hi; r++ {
		dst[r-lo] = dotRowGo(a.m, r, a.x, a.sumx)
	}
}

// dequantRow writes row r of m as float32 (q·scale + bias) into dst.
func dequantRow(dst []float32, m *Matrix, r int) { dequantRowGo(dst, m, r) }

// dotF32 returns Σ a[i]·b[i] (len(b) >= len(a)).
func dotF32(a, b []float32) float32 { return dotF32Go(a, b) }

// dotF32x4 sets out[t] = Σ_i a[i]·x[t*stride+i] for t = 0..3.
func dotF32x4(out *[4]float32, a, x []float32, stride int) { dotF32x4Go(out, a, x, stride) }
