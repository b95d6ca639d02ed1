//go:build amd64 && !noasm && gc

package quant

import (
	"unsafe"

	"github.com/fmoe/fmoe/internal/cpufeat"
)

// The AVX2+FMA kernels handle 4- and 2-bit matrices whose groups are whole
// multiples of 64 columns (MLX's default group is 64), four rows at a time;
// the last Rows mod 4 rows, and every other shape, use the pure-Go kernels.
// Which rows go where depends only on the shape, never on the thread count.
//
// A 64-column block of one row is 8 words (4-bit) or 4 words (2-bit). The
// kernels load the words into the 8 int32 lanes of a YMM register (2-bit:
// the 4 words twice) and extract one code per lane per step with a shift, so
// lane l at step i holds column
//
//	4-bit: 8·l + i                     (shift 4·i)
//	2-bit: 16·(l mod 4) + 2·i + l/4    (shift 4·i + 2·(l/4))
//
// x is permuted once per call into that order (xp[64·blk + 8·i + l]), so each
// step is one contiguous load of x shared by the four rows, then
// convert+FMA per row. A group's accumulator is folded into the row total as
// tot += scale·acc + bias·(Σx/8 in every lane); one horizontal sum per row
// at the end.

var useAVX2 = cpufeat.AVX2FMA

//go:noescape
func dot4x4AVX2(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx8 *float32, ngroups, bpg int, out *[4]float32)

//go:noescape
func dot2x4AVX2(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx8 *float32, ngroups, bpg int, out *[4]float32)

//go:noescape
func dotF32AVX2(a, b *float32, n int) float32

// mvArgs holds what one MatVec call shares between its workers.
type mvArgs struct {
	m       *Matrix
	x, sumx []float32
	simd    bool
	xp      []float32 // x permuted for the SIMD kernels
	sumx8   []float32 // per group, 8 lanes of Σx/8
}

func newMVArgs(m *Matrix, x []float32) *mvArgs {
	a := &mvArgs{m: m, x: x, sumx: groupSums(x, m.GroupSize)}
	a.simd = useAVX2 && (m.Bits == 4 || m.Bits == 2) && m.GroupSize%64 == 0 && m.Rows >= 4
	if !a.simd {
		return a
	}
	a.xp = make([]float32, len(x))
	for blk := 0; blk < len(x); blk += 64 {
		xs, ps := x[blk:blk+64], a.xp[blk:blk+64]
		for i := 0; i < 8; i++ {
			for l := 0; l < 8; l++ {
				if m.Bits == 4 {
					ps[8*i+l] = xs[8*l+i]
				} else {
					ps[8*i+l] = xs[16*(l%4)+2*i+l/4]
				}
			}
		}
	}
	a.sumx8 = make([]float32, 8*len(a.sumx))
	for g, s := range a.sumx {
		for l := 0; l < 8; l++ {
			a.sumx8[8*g+l] = s / 8
		}
	}
	return a
}

// rows computes rows [lo, hi) of the product into dst[:hi-lo]; lo is a
// multiple of rowQuantum (4).
func (a *mvArgs) rows(dst []float32, lo, hi int) {
	r := lo
	if a.simd {
		m := a.m
		wpr, gpr := m.WordsPerRow(), m.GroupsPerRow()
		bpg := m.GroupSize / 64
		kernel := dot4x4AVX2
		if m.Bits == 2 {
			kernel = dot2x4AVX2
		}
		var out [4]float32
		for ; r+4 <= hi; r += 4 {
			kernel(&m.W[r*wpr], wpr*4, &m.Scales[r*gpr], &m.Biases[r*gpr], gpr*2,
				&a.xp[0], &a.sumx8[0], gpr, bpg, &out)
			copy(dst[r-lo:], out[:])
		}
	}
	for ; r < hi; r++ {
		dst[r-lo] = dotRowGo(a.m, r, a.x, a.sumx)
	}
}

// dequantRow writes row r of m as float32 (q·scale + bias) into dst.
func dequantRow(dst []float32, m *Matrix, r int) { dequantRowGo(dst, m, r) }

// dotF32 returns Σ a[i]·b[i] (len(b) >= len(a)).
func dotF32(a, b []float32) float32 {
	n := len(a) &^ 7
	if !useAVX2 || n == 0 {
		return dotF32Go(a, b)
	}
	b = b[:len(a)]
	s := dotF32AVX2(unsafe.SliceData(a), unsafe.SliceData(b), n)
	for i := n; i < len(a); i++ {
		s += a[i] * b[i]
	}
	return s
}
