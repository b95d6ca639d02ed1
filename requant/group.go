package requant

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/fmoe/fmoe/quant"
)

// Method selects the 2-bit quantizer.
type Method string

// Quantizers.
const (
	MinMax Method = "minmax" // flash-moe's repack_experts_2bit.py, bit-exact
	MSE    Method = "mse"    // per-group least-squares search
)

// ParseMethod validates a method name.
func ParseMethod(s string) (Method, error) {
	switch Method(s) {
	case MinMax, MSE:
		return Method(s), nil
	}
	return "", fmt.Errorf("%w: method %q, want %q or %q", ErrUsage, s, MinMax, MSE)
}

// Stats accumulates the error of 2-bit values against the 4-bit values they
// replace. The zero value is empty.
type Stats struct {
	SumSq  float64 `json:"sum_sq"`
	N      int64   `json:"n"`
	MaxAbs float64 `json:"max_abs"`
}

// Merge adds o into s.
func (s *Stats) Merge(o Stats) {
	s.SumSq += o.SumSq
	s.N += o.N
	s.MaxAbs = max(s.MaxAbs, o.MaxAbs)
}

// RMSE returns the root mean squared error (0 when empty).
func (s Stats) RMSE() float64 {
	if s.N == 0 {
		return 0
	}
	return math.Sqrt(s.SumSq / float64(s.N))
}

// groupIn is one input group reduced to its 16 levels.
type groupIn struct {
	v    [16]float32 // f(q) for every 4-bit code q
	cnt  [16]int32   // how many columns of the group carry code q
	mask uint32      // bit q set when cnt[q] > 0
}

// groupOut is the 2-bit answer for one group.
type groupOut struct {
	s, b uint16   // stored bf16 scale and bias
	code [16]byte // 2-bit code for every 4-bit code
}

// levels fills g from a 4-bit scale/bias and the group's packed words.
func (g *groupIn) levels(s4, b4 uint16, words []uint32) {
	s, b := quant.BF16ToF32(s4), quant.BF16ToF32(b4)
	for q := range g.v {
		// The explicit conversion rounds the product: numpy computes
		// q*s then +b as two float32 operations, never a fused one.
		g.v[q] = float32(float32(q)*s) + b
	}
	// Four tallies break the store-to-load chains of repeated codes.
	var c [4][16]int32
	for _, w := range words {
		c[0][w&15]++
		c[1][w>>4&15]++
		c[2][w>>8&15]++
		c[3][w>>12&15]++
		c[0][w>>16&15]++
		c[1][w>>20&15]++
		c[2][w>>24&15]++
		c[3][w>>28]++
	}
	g.mask = 0
	for q := range g.cnt {
		n := c[0][q] + c[1][q] + c[2][q] + c[3][q]
		g.cnt[q] = n
		g.mask |= uint32(-n) >> 31 << q
	}
}

// minMax is the flash-moe quantizer (see the package doc).
func minMax(g *groupIn, o *groupOut) {
	// f(q) is monotone in q (each rounding step is), so the extremes sit at
	// the lowest and highest present codes, unless s4 or b4 is not finite.
	qlo, qhi := bits.TrailingZeros32(g.mask), bits.Len32(g.mask)-1
	a, z := g.v[qlo], g.v[qhi]
	lo, hi := min(a, z), max(a, z)
	if isInfOrNaN(lo) || isInfOrNaN(hi) || isInfOrNaN(g.v[0]) || isInfOrNaN(g.v[15]) {
		lo, hi = float32(math.Inf(1)), float32(math.Inf(-1))
		nan := false
		for q, n := range g.cnt {
			if n != 0 {
				v := g.v[q]
				nan = nan || v != v
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		if nan { // numpy's min/max propagate NaN
			lo, hi = float32(math.NaN()), float32(math.NaN())
		}
	}
	s2 := (hi - lo) / 3
	d := s2
	if s2 == 0 {
		d = 1
	}
	for q := range g.v {
		o.code[q] = clampCode((g.v[q] - lo) / d)
	}
	o.s = quant.F32ToBF16Trunc(s2)
	o.b = quant.F32ToBF16Trunc(lo)
}

func isInfOrNaN(x float32) bool { return math.Float32bits(x)&0x7f800000 == 0x7f800000 }

// roundMagic is 1.5·2^23: for |x| < 2^22, (x + roundMagic) − roundMagic is x
// rounded to an integer, ties to even (the float32 rounding mode).
const roundMagic = 12582912

// clampCode is numpy's clip(round(x), 0, 3).astype(uint8): round half to
// even; NaN becomes 0 (what the float→uint8 cast gives on x86). Codes of
// absent levels are computed too and never used.
func clampCode(x float32) byte {
	if !(x > 0) { // negative, zero or NaN
		return 0
	}
	if x >= 3 {
		return 3
	}
	m := float32(roundMagic)
	return byte(int32((x + m) - m))
}

// measure adds the group's error under the stored parameters to st.
func measure(g *groupIn, o *groupOut, st *Stats) {
	s, b := quant.BF16ToF32(o.s), quant.BF16ToF32(o.b)
	var sum, mx float64
	var n int32
	for q, c := range g.cnt {
		r := float32(float32(o.code[q])*s) + b
		e := math.Abs(float64(g.v[q]) - float64(r))
		if c == 0 {
			continue
		}
		sum += float64(c) * e * e
		n += c
		if e > mx || e != e {
			mx = e
		}
	}
	st.SumSq += sum
	st.N += int64(n)
	if mx > st.MaxAbs || mx != mx {
		st.MaxAbs = mx
	}
}

// pack2 writes the 2-bit codes of one group: in holds the group's 4-bit words
// (8 codes each), out receives len(in)/2 words (16 codes each), LSB first.
func pack2(o *groupOut, in, out []uint32) {
	var t [16]uint32
	for q, c := range o.code {
		t[q] = uint32(c)
	}
	for i := range out {
		a, b := in[2*i], in[2*i+1]
		out[i] = t[a&15] | t[a>>4&15]<<2 | t[a>>8&15]<<4 | t[a>>12&15]<<6 |
			t[a>>16&15]<<8 | t[a>>20&15]<<10 | t[a>>24&15]<<12 | t[a>>28]<<14 |
			t[b&15]<<16 | t[b>>4&15]<<18 | t[b>>8&15]<<20 | t[b>>12&15]<<22 |
			t[b>>16&15]<<24 | t[b>>20&15]<<26 | t[b>>24&15]<<28 | t[b>>28]<<30
	}
}

// Matrix requantizes the 4-bit src into the 2-bit dst (same rows, columns and
// group size; dst's buffers are overwritten) and adds the error to st.
func Matrix(dst, src *quant.Matrix, m Method, st *Stats) error {
	if err := src.Validate(); err != nil {
		return fmt.Errorf("requant: source: %w", err)
	}
	if err := dst.Validate(); err != nil {
		return fmt.Errorf("requant: destination: %w", err)
	}
	if src.Bits != 4 || dst.Bits != 2 || src.Rows != dst.Rows || src.Cols != dst.Cols || src.GroupSize != dst.GroupSize {
		return fmt.Errorf("%w: %d-bit %dx%d/g%d to %d-bit %dx%d/g%d", ErrShape,
			src.Bits, src.Rows, src.Cols, src.GroupSize, dst.Bits, dst.Rows, dst.Cols, dst.GroupSize)
	}
	if src.GroupSize%16 != 0 {
		return fmt.Errorf("%w: group size %d is not a multiple of 16", ErrShape, src.GroupSize)
	}
	quantize := minMax
	if m == MSE {
		quantize = mse
	}
	w4, w2 := src.GroupSize/8, src.GroupSize/16
	var g groupIn
	var o groupOut
	for i := range src.Scales {
		in := src.W[i*w4 : (i+1)*w4]
		g.levels(src.Scales[i], src.Biases[i], in)
		quantize(&g, &o)
		measure(&g, &o, st)
		pack2(&o, in, dst.W[i*w2:(i+1)*w2])
		dst.Scales[i], dst.Biases[i] = o.s, o.b
	}
	return nil
}
