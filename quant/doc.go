// Package quant holds MLX-style affine quantization: the packed matrix type,
// bf16 conversions, the quantizer used to build checkpoints, and the fused
// quantized matrix-vector products that are the hot loop of the CPU engine.
//
// Layout (MLX affine, bits ∈ {2, 4, 8}): a matrix [Rows, Cols] is split into
// groups of GroupSize consecutive columns of each row. Element (r, c) is an
// unsigned code q stored in little-endian uint32 words, least significant bits
// first: word r*Cols*Bits/32 + c/(32/Bits), bit offset Bits*(c mod 32/Bits).
// Scales and biases are bf16 [Rows, Cols/GroupSize]. The value is
//
//	w[r, c] = q[r, c] * scale[r, c/GroupSize] + bias[r, c/GroupSize]
//
// so a dot product with x is computed per group as
// scale*Σ q_i x_i + bias*Σ x_i, never materialising w.
package quant
