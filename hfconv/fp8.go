package hfconv

import "math"

// fp8E4M3 and fp8E5M2 map every byte to its float32 value.
var fp8E4M3, fp8E5M2 = fp8Table(4, 3, true), fp8Table(5, 2, false)

// fp8Table builds the decode table of an 8-bit float with the given exponent
// and mantissa widths. fn selects the "FN" variant (E4M3FN: no infinities,
// only S.1111.111 is NaN); otherwise the IEEE-like rules apply (E5M2: an
// all-ones exponent is infinity or NaN).
func fp8Table(expBits, manBits int, fn bool) [256]float32 {
	var t [256]float32
	bias := 1<<(expBits-1) - 1
	expMax := 1<<expBits - 1
	for b := 0; b < 256; b++ {
		sign := float32(1)
		if b&0x80 != 0 {
			sign = -1
		}
		e := (b >> manBits) & expMax
		m := b & (1<<manBits - 1)
		var v float32
		switch {
		case fn && e == expMax && m == 1<<manBits-1:
			v = float32(math.NaN())
		case !fn && e == expMax && m == 0:
			v = float32(math.Inf(1))
		case !fn && e == expMax:
			v = float32(math.NaN())
		case e == 0:
			v = float32(math.Ldexp(float64(m)/float64(int(1)<<manBits), 1-bias))
		default:
			v = float32(math.Ldexp(1+float64(m)/float64(int(1)<<manBits), e-bias))
		}
		t[b] = sign * v
	}
	return t
}
