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

// Products: MatVec (one token), MatVecBatch (several matrices in one
// parallel region, e.g. the K experts of a decode step) and MatMul (a batch
// of tokens, weight rows dequantized once per block of tokens) for 2-, 4-
// and 8-bit matrices, and
// MatVecF32/MatMulF32 for dense float32 weights. They split rows over a
// package worker pool of GOMAXPROCS goroutines (small products run inline),
// in chunks that start at multiples of 4 rows, so every row is computed by
// the same kernel in the same order whatever the thread count: results are
// bit-for-bit reproducible. Kernels are chosen once from the CPU features
// (internal/cpufeat): AVX-512 (4/2/8-bit, rows of a multiple of 16 groups of
// 64k columns), AVX2+FMA (4/2-bit, groups of 64k columns), pure Go otherwise
// or with -tags noasm. See matvec_amd64.go for the SIMD layouts.
