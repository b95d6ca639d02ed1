//go:build amd64 && !noasm && gc

package quant

import "math/bits"

// SIMD quantizer (AVX2). Groups are processed in batches of whole groups,
// about quantBatch values (L1-resident between the two passes):
//
//  1. rangeParamsAVX2, 8 groups at a time: min and max(0, max) with
//     VMINPS/VMAXPS, the value as first operand so that NaNs are skipped as
//     in groupRange; the 8 groups' lanes reduced together (shuffle tree);
//     then groupParams on the 8 ranges as vectors (roundf as trunc plus a
//     step away from zero when |r − trunc(r)| ≥ 0.5, exact in float32) and
//     F32ToBF16 as integer ops;
//  2. encode{2,4,8}AVX2: per 32 values x = (v−bias)/scale (VDIVPS: a true
//     division), VMINPS(2^bits−1, x) (x kept when NaN, as the Go clamp does),
//     code = x ≥ 0.5 ? trunc(x+0.5) : 0 (roundCode; NaN gives 0), then the
//     int32 codes are packed to bytes in order (VPACKUSDW, VPACKUSWB, VPERMD)
//     and, for 4 and 2 bits, pairs of codes are merged LSB-first with
//     VPMADDUBSW (c0 + 16·c1, c0 + 4·c1) and repacked.
//
// Every floating-point step is the same IEEE float32 operation as in
// quantizeGo, so the output is bit-identical.

//go:noescape
func rangeParamsAVX2(vals *float32, group, ngroups int, nbins float32, sc, bi *float32, sc16, bi16 *uint16, scratch *float32)

//go:noescape
func encode4AVX2(vals *float32, n int, sc, bi *float32, shift int, nbins float32, dst *uint32)

//go:noescape
func encode2AVX2(vals *float32, n int, sc, bi *float32, shift int, nbins float32, dst *uint32)

//go:noescape
func encode8AVX2(vals *float32, n int, sc, bi *float32, shift int, nbins float32, dst *uint32)

// quantBatch is the number of values one pair of kernel calls covers.
const quantBatch = 4096

// quantizeSIMD quantizes a prefix of m's groups with the SIMD kernels and
// returns how many it did: a multiple of 8 groups of 32·2^k columns (so
// that each call covers a multiple of 128 values), or none.
func quantizeSIMD(m *Matrix, w []float32) int { return quantizeBatches(m, w, nil) }

// quantizeSIMDBF16 is quantizeSIMD for bf16 input, widened batch by batch.
func quantizeSIMDBF16(m *Matrix, src []uint16) int { return quantizeBatches(m, nil, src) }

// quantizeBatches runs the kernels over w, or over src widened one batch
// at a time into an L1-sized buffer when w is nil.
func quantizeBatches(m *Matrix, w []float32, src []uint16) int {
	group := m.GroupSize
	shift := bits.TrailingZeros(uint(group / 32))
	ng := len(m.Scales) &^ 7
	if !useAVX2 || group%32 != 0 || group != 32<<shift || ng == 0 {
		return 0
	}
	const maxNB = quantBatch / 32
	nb := max(8, quantBatch/group) // groups per batch, a multiple of 8
	nBins := float32(int(1)<<m.Bits - 1)
	per := 32 / m.Bits
	var sc, bi [maxNB]float32
	var scratch [128]float32
	var buf []float32
	if w == nil {
		buf = make([]float32, nb*group)
	}
	encode := encode4AVX2
	switch m.Bits {
	case 2:
		encode = encode2AVX2
	case 8:
		encode = encode8AVX2
	}
	for g := 0; g < ng; {
		n := min(nb, ng-g)
		var vals []float32
		if w != nil {
			vals = w[g*group : (g+n)*group]
		} else {
			vals = buf[:n*group]
			s := src[g*group : (g+n)*group]
			widenBF16AVX2(&vals[0], &s[0], len(s))
		}
		_, _ = m.Scales[g+n-1], m.Biases[g+n-1]
		rangeParamsAVX2(&vals[0], group, n, nBins, &sc[0], &bi[0], &m.Scales[g], &m.Biases[g], &scratch[0])
		words := m.W[g*group/per : (g+n)*group/per]
		encode(&vals[0], len(vals), &sc[0], &bi[0], shift, nBins, &words[0])
		g += n
	}
	return ng
}

//go:noescape
func widenBF16AVX2(dst *float32, src *uint16, n int)

// widenSIMD widens the first len(src)&^31 values of src into dst (len(dst)
// ≥ len(src)) and returns that count.
func widenSIMD(dst []float32, src []uint16) int {
	n := len(src) &^ 31
	if !useAVX2 || n == 0 {
		return 0
	}
	_ = dst[n-1]
	widenBF16AVX2(&dst[0], &src[0], n)
	return n
}
