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

// dot is a float32 dot product (the quant package's dense kernel).
func dot(a, b []float32) float32 { return quant.DotF32(a, b) }
