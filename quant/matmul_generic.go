//go:build !amd64 || noasm || !gc

package quant

// matMulTiled reports that there is no tiled prefill product here.
func matMulTiled([]float32, *Matrix, []float32, int) bool { return false }
