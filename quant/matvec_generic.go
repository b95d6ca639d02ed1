//go:build !amd64 || noasm || !gc

package quant

const kernGo = 0

// xprep is what the products of one x share whatever the matrix (of one
// group size): Σx per group.
type xprep struct {
	x, sumx []float32
	group   int
	kern    int // always kernGo
}

func kernelFor(*Matrix) int { return kernGo }

// fits reports whether p serves a product of m with x.
func (p *xprep) fits(m *Matrix, x []float32, _ int) bool {
	return p.group == m.GroupSize && sameSlice(p.x, x)
}

// fill computes Σx per group of m into p's buffer.
func (p *xprep) fill(m *Matrix, x []float32, kern int) {
	p.x, p.group, p.kern = x, m.GroupSize, kern
	p.sumx = groupSums(grow(p.sumx, len(x)/m.GroupSize), x, m.GroupSize)
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

func (p *xprep) clearAlias() {}
