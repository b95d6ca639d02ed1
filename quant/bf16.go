package quant

import "math"

// BF16ToF32 widens a bfloat16 bit pattern to float32 (exact: a shift).
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds a float32 to the nearest bfloat16, ties to even, the way
// torch and MLX cast. NaN stays NaN.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN: keep it quiet and non-zero
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// F32ToBF16Trunc keeps the high 16 bits of a float32 (no rounding), the
// conversion flash-moe's 2-bit repacker uses.
func F32ToBF16Trunc(f float32) uint16 { return uint16(math.Float32bits(f) >> 16) }
