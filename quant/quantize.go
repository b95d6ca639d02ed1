package quant

import (
	"fmt"
	"math"
)

// Quantize encodes a row-major float32 matrix [rows, cols] with MLX's affine
// quantizer (the rules of mlx/backend/cuda/quantized/affine_quantize.cu):
//
//   - per group: lo = min(w), hi = max(0, max(w)) (the running max starts at 0);
//   - scale = max((hi-lo)/(2^bits-1), 1e-7); the "edge" is lo when |lo| > |hi|,
//     else hi with the scale negated;
//   - q0 = round(edge/scale); when q0 != 0 the scale becomes edge/q0 and the
//     bias the edge (so 0.0 is exactly representable), otherwise bias = 0;
//   - q = min(round((w-bias)/scale), 2^bits-1), round half away from zero;
//   - scales and biases are stored as bf16 (round to nearest even).
//
// Codes are computed with the float32 scale and bias, before the bf16 cast.
// NaN inputs are skipped by the range and get code 0.
//
// With AVX2 and groups of a multiple of 32 columns the per-group range and
// the codes are computed by SIMD kernels (quantize_amd64.s), bit-identical
// to the pure-Go loop (quantizeGo), which handles everything else.
func Quantize(w []float32, rows, cols, bits, group int) (*Matrix, error) {
	m := &Matrix{Bits: bits, GroupSize: group, Rows: rows, Cols: cols}
	if err := m.alloc(len(w)); err != nil {
		return nil, err
	}
	g := quantizeSIMD(m, w)
	quantizeGo(m, w[g*group:], g, len(m.Scales))
	return m, nil
}

// QuantizeBF16 is Quantize of the bf16 bit patterns src (as BF16ToF32
// widens them), without a float32 copy of the whole matrix: the SIMD path
// widens one L1-sized batch at a time. The result is bit-identical to
// Quantize of the widened values.
func QuantizeBF16(src []uint16, rows, cols, bits, group int) (*Matrix, error) {
	m := &Matrix{Bits: bits, GroupSize: group, Rows: rows, Cols: cols}
	if err := m.alloc(len(src)); err != nil {
		return nil, err
	}
	g := quantizeSIMDBF16(m, src)
	rest := make([]float32, len(src)-g*group)
	WidenBF16(rest, src[g*group:])
	quantizeGo(m, rest, g, len(m.Scales))
	return m, nil
}

// alloc checks Quantize's arguments (m's shape, n values) and allocates
// the outputs.
func (m *Matrix) alloc(n int) error {
	rows, cols, bits, group := m.Rows, m.Cols, m.Bits, m.GroupSize
	if rows < 0 || cols < 0 || n != rows*cols {
		return fmt.Errorf("%w: %d values for %dx%d", ErrLayout, n, rows, cols)
	}
	if bits != 2 && bits != 4 && bits != 8 || group <= 0 || cols%group != 0 || group%(32/bits) != 0 {
		return fmt.Errorf("%w: cannot quantize %dx%d at %d bits, group %d", ErrLayout, rows, cols, bits, group)
	}
	m.W = make([]uint32, rows*m.WordsPerRow())
	m.Scales = make([]uint16, rows*m.GroupsPerRow())
	m.Biases = make([]uint16, len(m.Scales))
	return nil
}

// quantizeGo quantizes groups [g0, g1) of m (flat group index over rows)
// from w, which starts at group g0.
func quantizeGo(m *Matrix, w []float32, g0, g1 int) {
	bits, group := m.Bits, m.GroupSize
	nBins := float32(int(1)<<bits - 1)
	per := 32 / bits
	for g := g0; g < g1; g++ {
		vals := w[(g-g0)*group : (g-g0+1)*group]
		lo, hi := groupRange(vals)
		scale, bias := groupParams(lo, hi, nBins)
		m.Scales[g] = F32ToBF16(scale)
		m.Biases[g] = F32ToBF16(bias)
		words := m.W[g*group/per : (g+1)*group/per]
		for w := range words {
			var word uint32
			sh := uint(0)
			for _, v := range vals[w*per : (w+1)*per] {
				x := (v - bias) / scale
				if x > nBins {
					x = nBins
				}
				word |= roundCode(x) << sh
				sh += uint(bits)
			}
			words[w] = word
		}
	}
}

// groupParams returns the float32 scale and bias of a group whose range is
// lo = min(w), hi = max(0, max(w)), for codes 0..nBins.
func groupParams(lo, hi, nBins float32) (scale, bias float32) {
	scale = max((hi-lo)/nBins, 1e-7)
	edge := hi
	if abs32(lo) > abs32(hi) {
		edge = lo
	} else {
		scale = -scale
	}
	q0 := round32(edge / scale)
	if q0 != 0 {
		scale = edge / q0
		bias = edge
	}
	return scale, bias
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// roundCode is C's roundf(x) for a code x ≤ 2^bits-1: half away from zero;
// negative x (the grid never produces below -0.5) gives 0, as the clamp to
// unsigned codes does. For x ≥ 0.5, x+0.5 is exact in float32 whenever it
// could reach the next integer (x and x+0.5 then share a binade), so the
// truncation is exact; below 0.5 the answer is 0. (NaN: 0 on amd64, where
// the conversion goes through int64; the SIMD kernels give 0 too.)
func roundCode(x float32) uint32 {
	if x < 0.5 {
		return 0
	}
	return uint32(x + 0.5)
}

// groupRange returns min(vals) and max(0, max(vals)) (the CUDA kernel's
// running max starts at 0) with four independent accumulators. NaNs never
// compare, so they are skipped.
func groupRange(vals []float32) (lo, hi float32) {
	l0, l1, l2, l3 := float32(math.MaxFloat32), float32(math.MaxFloat32), float32(math.MaxFloat32), float32(math.MaxFloat32)
	var h0, h1, h2, h3 float32
	i := 0
	for ; i+4 <= len(vals); i += 4 {
		v := vals[i : i+4 : i+4]
		if v[0] < l0 {
			l0 = v[0]
		}
		if v[1] < l1 {
			l1 = v[1]
		}
		if v[2] < l2 {
			l2 = v[2]
		}
		if v[3] < l3 {
			l3 = v[3]
		}
		if v[0] > h0 {
			h0 = v[0]
		}
		if v[1] > h1 {
			h1 = v[1]
		}
		if v[2] > h2 {
			h2 = v[2]
		}
		if v[3] > h3 {
			h3 = v[3]
		}
	}
	for ; i < len(vals); i++ {
		if vals[i] < l0 {
			l0 = vals[i]
		}
		if vals[i] > h0 {
			h0 = vals[i]
		}
	}
	return min(l0, l1, l2, l3), max(h0, h1, h2, h3)
}

// round32 rounds half away from zero, like C's roundf.
func round32(x float32) float32 { return float32(math.Round(float64(x))) }

// WidenBF16 sets dst[i] = BF16ToF32(src[i]) for every i < len(dst);
// src must be at least as long (a BF16 tensor's bytes viewed with U16s).
func WidenBF16(dst []float32, src []uint16) {
	src = src[:len(dst)]
	i := widenSIMD(dst, src)
	for ; i < len(src); i++ {
		dst[i] = math.Float32frombits(uint32(src[i]) << 16)
	}
}
