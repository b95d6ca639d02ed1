package cpu

import (
	"github.com/fmoe/fmoe/quant"
	"github.com/fmoe/fmoe/runtime"
)

// matmul computes dst[t] = W·x[t] for t < T (x [T, In], dst [T, Out]).
// It is the one place every matrix product goes through: quant.MatMul
// (fused per-group dequantization, all cores) for quantized weights,
// quant.MatMulF32 for dense ones.
func (b *Backend) matmul(dst []float32, w *runtime.WeightData, x []float32, T int) {
	if w.Q != nil {
		quant.MatMul(dst[:T*w.Out], w.Q, x[:T*w.In], T)
		return
	}
	quant.MatMulF32(dst[:T*w.Out], w.F, w.Out, w.In, x[:T*w.In], T)
}

// dot is a float32 dot product with four float32 accumulators.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}
