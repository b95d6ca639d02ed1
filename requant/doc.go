// Package requant converts packed 4-bit MLX experts into 2-bit experts of the
// same layout (fmoe requant).
//
// Every group of GroupSize consecutive columns of a row holds 4-bit codes
// q ∈ [0,15] with a bf16 scale s4 and bias b4, so its dequantized values
//
//	f(q) = float32(q·s4) + b4      (float32, two roundings, never fused)
//
// take at most 16 distinct values. Both quantizers work on those 16 levels and
// their counts in the group, then map every 4-bit code to a 2-bit code through
// a 16-entry table; the output group stores a bf16 scale s2 and bias b2 and
// dequantizes as q2·s2 + b2.
//
// MinMax reproduces flash-moe's metal_infer/repack_experts_2bit.py bit for bit:
//
//	lo, hi = min f, max f                     (float32)
//	s2 = (hi − lo) / 3                        (float32 division)
//	d  = s2, or 1 where s2 == 0
//	q2 = clip(roundHalfEven((f − lo) / d), 0, 3)   (float32 subtract and divide)
//	stored s2, b2 = lo: bf16 by truncation (high 16 bits)
//
// so the codes are chosen with the float32 parameters and read back with the
// truncated ones, exactly like the script.
//
// MSE searches, per group, for the scale and offset that minimize the squared
// error against the 4-bit values as they will be read back: clip ranges
// between the extreme levels refined by alternating nearest-code assignment
// and a closed-form weighted least-squares fit, then the neighbouring bf16
// values of the result are tried and every level takes its nearest code under
// the stored (bf16) parameters. The min/max answer is always among the
// candidates, so MSE never does worse than MinMax on any group.
//
// The error of the output against the 4-bit weights (sum of squares, count and
// max abs) is measured with the stored parameters, per projection.
package requant
