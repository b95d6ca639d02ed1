//go:build !amd64 || noasm || !gc

package quant

// quantizeSIMD quantizes a prefix of m's groups with SIMD kernels and
// returns how many it did: none without them.
func quantizeSIMD(m *Matrix, w []float32) int { return 0 }

// widenSIMD widens a prefix of src into dst and returns its length: none
// without SIMD kernels.
func widenSIMD(dst []float32, src []uint16) int { return 0 }

// quantizeSIMDBF16 is quantizeSIMD for bf16 input.
func quantizeSIMDBF16(m *Matrix, src []uint16) int { return 0 }
