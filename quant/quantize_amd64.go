//go:build amd64 && !noasm && gc

package quant

// SIMD quantizer (AVX2). Groups are processed in batches of whole groups,
// about quantBatch values (L1-resident between the two passes):
//
//  1. groupRangeAVX2: per group min and max(0, max) with VMINPS/VMAXPS,
//     the value as first operand so that NaNs are skipped as in groupRange;
//  2. groupParams in Go: scale and bias per group (and their bf16 forms),
//     spread to one entry per 32 values;
//  3. encode{2,4,8}AVX2: per 32 values x = (v−bias)/scale (VDIVPS: a true
//     division), VMINPS(2^bits−1, x) (x kept when NaN, as the Go clamp does),
//     code = x ≥ 0.5 ? trunc(x+0.5) : 0 (roundCode; NaN gives 0), then the
//     int32 codes are packed to bytes in order (VPACKUSDW, VPACKUSWB, VPERMD)
//     and, for 4 and 2 bits, pairs of codes are merged LSB-first with
//     VPMADDUBSW (c0 + 16·c1, c0 + 4·c1) and repacked.
//
// Every floating-point step is the same IEEE float32 operation as in
// quantizeGo, so the output is bit-identical.

//go:noescape
func groupRangeAVX2(vals *float32, group, ngroups int, lo, hi *float32)

//go:noescape
func encode4AVX2(vals *float32, n int, sc, bi *float32, nbins float32, dst *uint32)

//go:noescape
func encode2AVX2(vals *float32, n int, sc, bi *float32, nbins float32, dst *uint32)

//go:noescape
func encode8AVX2(vals *float32, n int, sc, bi *float32, nbins float32, dst *uint32)

// quantBatch is the number of values one pair of kernel calls covers.
const quantBatch = 4096

// quantizeSIMD quantizes a prefix of m's groups with the SIMD kernels and
// returns how many it did: a multiple of 4 groups (so that each call covers
// a multiple of 128 values) of a multiple of 32 columns, or none.
func quantizeSIMD(m *Matrix, w []float32) int {
	group := m.GroupSize
	ng := len(m.Scales)
	if !useAVX2 || group%32 != 0 || ng < 4 {
		return 0
	}
	nb := max(4, quantBatch/group&^3) // groups per batch
	nBins := float32(int(1)<<m.Bits - 1)
	per := 32 / m.Bits
	cpg := group / 32
	lo, hi := make([]float32, nb), make([]float32, nb)
	sc, bi := make([]float32, nb*cpg), make([]float32, nb*cpg)
	encode := encode4AVX2
	switch m.Bits {
	case 2:
		encode = encode2AVX2
	case 8:
		encode = encode8AVX2
	}
	g := 0
	for g < ng&^3 {
		n := min(nb, ng&^3-g)
		vals := w[g*group : (g+n)*group]
		groupRangeAVX2(&vals[0], group, n, &lo[0], &hi[0])
		for i := 0; i < n; i++ {
			scale, bias := groupParams(lo[i], hi[i], nBins)
			m.Scales[g+i] = F32ToBF16(scale)
			m.Biases[g+i] = F32ToBF16(bias)
			for j := i * cpg; j < (i+1)*cpg; j++ {
				sc[j], bi[j] = scale, bias
			}
		}
		words := m.W[g*group/per : (g+n)*group/per]
		encode(&vals[0], len(vals), &sc[0], &bi[0], nBins, &words[0])
		g += n
	}
	return g
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
