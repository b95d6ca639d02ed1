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
// x is permuted once per call into that order (xp[64·blk + 8·i + l]: for
// 4-bit the 8×8 transpose of the block, for 2-bit its 4×16 transpose, see
// permuteX), so each step is one contiguous load of x shared by the four
// rows, then convert+FMA per row. A group's accumulator is folded into the row total as
// tot += scale·acc + bias·(Σx/8 in every lane); one horizontal sum per row
// at the end.

// With AVX-512 (and a row of a multiple of 16 groups) a 64-column block
// is the block's words broadcast into the 16 lanes of a ZMM register and
// unpacked in 4 steps; lane l at step i holds column
//
//	4-bit: 8·(l mod 8) + 2·i + l/8     (shift 4·(2·i + l/8))
//	2-bit: 16·(l mod 4) + 4·i + l/4    (shift 2·(4·i + l/4))
//
// and x is permuted to xp[64·blk + 16·i + l], which is the same two
// transposes. VPERMPS of a 16-entry table gives the code's float value
// directly; scales are widened once per 4-row
// block; the bias term is a vector dot product of biases with Σx per group.

var (
	useAVX2   = cpufeat.AVX2FMA
	useAVX512 = cpufeat.AVX512 && cpufeat.AVX2FMA
)

// kernel kinds of a MatVec call.
const (
	kernGo = iota
	kernAVX2
	kernAVX512
)

//go:noescape
func dot4x4AVX512(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx *float32, ngroups, bpg int, out *[4]float32, scratch *float32)

//go:noescape
func dot8x4AVX512(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx *float32, ngroups, bpg int, out *[4]float32, scratch *float32)

//go:noescape
func dot2x4AVX512(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx *float32, ngroups, bpg int, out *[4]float32, scratch *float32)

//go:noescape
func dot4x4AVX2(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx8 *float32, ngroups, bpg int, out *[4]float32)

//go:noescape
func dot2x4AVX2(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx8 *float32, ngroups, bpg int, out *[4]float32)

//go:noescape
func prepX4AVX512(x, xp, sumx *float32, ngroups, bpg int)

//go:noescape
func prepX2AVX512(x, xp, sumx *float32, ngroups, bpg int)

//go:noescape
func dotF32AVX2(a, b *float32, n int) float32

//go:noescape
func dotF32x4AVX2(a, x *float32, xstride, n int, out *[4]float32)

// xprep is what the products of one x share whatever the matrix (of one
// group size and kernel): Σx per group and x permuted for the SIMD kernels.
type xprep struct {
	x, sumx []float32
	group   int
	kern    int
	bits    int       // permutation class: 4, 2 or 8 (x used as is)
	xp      []float32 // x permuted for the SIMD kernels (x itself for 8-bit)
	sumx8   []float32 // AVX2: per group, 8 lanes of Σx/8
	own     []float32 // the buffer behind xp when it is not x
}

// fits reports whether p serves a product of m (kernel kern) with x.
func (p *xprep) fits(m *Matrix, x []float32, kern int) bool {
	return p.kern == kern && p.group == m.GroupSize && sameSlice(p.x, x) &&
		(kern == kernGo || p.bits == m.Bits)
}

// kernelFor picks the kernel of a matrix shape, from the shape alone.
func kernelFor(m *Matrix) int {
	if m.GroupSize%64 != 0 || m.Rows < 4 {
		return kernGo
	}
	if useAVX512 && m.GroupsPerRow()%16 == 0 {
		return kernAVX512
	}
	if useAVX2 && m.Bits != 8 {
		return kernAVX2
	}
	return kernGo
}

// fill computes the prepared forms of x for m's group size and kernel,
// reusing p's buffers.
func (p *xprep) fill(m *Matrix, x []float32, kern int) {
	p.x, p.group, p.kern, p.bits = x, m.GroupSize, kern, m.Bits
	p.sumx = grow(p.sumx, len(x)/m.GroupSize)
	switch {
	case kern == kernGo || m.Bits == 8:
		groupSums(p.sumx, x, m.GroupSize)
		p.xp = x // AVX-512 8-bit: codes are bytes in column order
		return
	case useAVX512:
		// The SIMD kernels need groups of 64k columns: one pass permutes
		// and sums (in its own order, used by every row of the call).
		p.own = grow(p.own, len(x))
		p.xp = p.own
		prep := prepX4AVX512
		if m.Bits == 2 {
			prep = prepX2AVX512
		}
		prep(&x[0], &p.xp[0], &p.sumx[0], len(p.sumx), m.GroupSize/64)
	default:
		groupSums(p.sumx, x, m.GroupSize)
		p.own = grow(p.own, len(x))
		p.xp = p.own
		permuteX(p.xp, x, m.Bits)
	}
	if kern == kernAVX2 {
		p.sumx8 = grow(p.sumx8, 8*len(p.sumx))
		for g, s := range p.sumx {
			v := s / 8
			l := (*[8]float32)(p.sumx8[8*g : 8*g+8])
			for i := range l {
				l[i] = v
			}
		}
	}
}

// rows computes rows [lo, hi) of the product into dst[:hi-lo]; lo is a
// multiple of rowQuantum (4).
func (a *mvArgs) rows(dst []float32, lo, hi int) {
	r := lo
	m := a.m
	wpr, gpr := m.WordsPerRow(), m.GroupsPerRow()
	bpg := m.GroupSize / 64
	var out [4]float32
	switch a.kern {
	case kernAVX2:
		kernel := dot4x4AVX2
		if m.Bits == 2 {
			kernel = dot2x4AVX2
		}
		for ; r+4 <= hi; r += 4 {
			kernel(&m.W[r*wpr], wpr*4, &m.Scales[r*gpr], &m.Biases[r*gpr], gpr*2,
				&a.xp[0], &a.sumx8[0], gpr, bpg, &out)
			copy(dst[r-lo:], out[:])
		}
	case kernAVX512:
		kernel := dot4x4AVX512
		switch m.Bits {
		case 2:
			kernel = dot2x4AVX512
		case 8:
			kernel = dot8x4AVX512
		}
		var stack [4 * 256]float32
		scratch := stack[:]
		if 4*gpr > len(stack) {
			scratch = make([]float32, 4*gpr)
		}
		for ; r+4 <= hi; r += 4 {
			kernel(&m.W[r*wpr], wpr*4, &m.Scales[r*gpr], &m.Biases[r*gpr], gpr*2,
				&a.xp[0], &a.sumx[0], gpr, bpg, &out, &scratch[0])
			copy(dst[r-lo:], out[:])
		}
	}
	for ; r < hi; r++ {
		dst[r-lo] = dotRowGo(m, r, a.x, a.sumx)
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

// dotF32x4 sets out[t] = Σ_i a[i]·x[t*stride+i] for t = 0..3.
func dotF32x4(out *[4]float32, a, x []float32, stride int) {
	n := len(a) &^ 7
	if !useAVX2 || n == 0 {
		dotF32x4Go(out, a, x, stride)
		return
	}
	_ = x[3*stride+len(a)-1]
	dotF32x4AVX2(unsafe.SliceData(a), unsafe.SliceData(x), stride*4, n, out)
	for t := 0; t < 4; t++ {
		xt := x[t*stride : t*stride+len(a)]
		for i := n; i < len(a); i++ {
			out[t] += a[i] * xt[i]
		}
	}
}

// clearAlias drops the reference to the caller's x held for 8-bit products.
func (p *xprep) clearAlias() { p.xp = nil }
