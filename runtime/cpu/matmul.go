package cpu

import (
	"github.com/fmoe/fmoe/runtime"
)

// matmul computes dst[t] = W·x[t] for t < T (x [T, In], dst [T, Out]).
// It is the one place every matrix product goes through; quantized weights
// are dequantized one row at a time (never the whole matrix) and the row is
// reused for all T tokens.
func (b *Backend) matmul(dst []float32, w *runtime.WeightData, x []float32, T int) {
	out, in := w.Out, w.In
	b.parallel(out, func(lo, hi int) {
		var row []float32
		if w.Q != nil {
			row = make([]float32, in)
		}
		for r := lo; r < hi; r++ {
			if w.Q != nil {
				w.Q.DequantizeRow(row, r)
			} else {
				row = w.F[r*in : (r+1)*in]
			}
			for t := 0; t < T; t++ {
				dst[t*out+r] = dot(row, x[t*in:(t+1)*in])
			}
		}
	})
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
