package quant

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchQuantInput is a [rows, cols] Gaussian matrix (σ 0.02) rounded to
// bf16, like a BF16 checkpoint's weights.
func benchQuantInput(rows, cols int) []float32 {
	r := rand.New(rand.NewPCG(1, 1))
	w := make([]float32, rows*cols)
	for i := range w {
		w[i] = BF16ToF32(F32ToBF16(float32(r.NormFloat64()) * 0.02))
	}
	return w
}

// benchQuantize reports bytes of BF16 input (2 per value) per second, and
// per CPU-second (MB/cpu-s: robust to a shared box).
func benchQuantize(b *testing.B, bits int) {
	const rows, cols = 1024, 4096
	for _, group := range []int{64, 128} {
		b.Run(fmt.Sprintf("%dx%d/g%d", rows, cols, group), func(b *testing.B) {
			w := benchQuantInput(rows, cols)
			b.SetBytes(2 * rows * cols)
			b.ResetTimer()
			c0 := cpuSeconds()
			for i := 0; i < b.N; i++ {
				if _, err := Quantize(w, rows, cols, bits, group); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, c0, 2*rows*cols)
		})
	}
}

func BenchmarkQuantize4(b *testing.B) { benchQuantize(b, 4) }
func BenchmarkQuantize2(b *testing.B) { benchQuantize(b, 2) }
func BenchmarkQuantize8(b *testing.B) { benchQuantize(b, 8) }

// BenchmarkWidenBF16 widens 1M bf16 values (2 MiB in, 4 MiB out: beyond L2)
// into a reused buffer; bytes are the BF16 input.
func BenchmarkWidenBF16(b *testing.B) {
	const n = 1 << 20
	src := make([]uint16, n)
	for i := range src {
		src[i] = uint16(i * 7919)
	}
	dst := make([]float32, n)
	b.SetBytes(2 * n)
	b.ResetTimer()
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		WidenBF16(dst, src)
	}
	reportCPU(b, c0, 2*n)
}

// BenchmarkQuantizeBF16 is BenchmarkQuantize4 from the bf16 bits (no
// float32 copy of the matrix), as a converter reading a BF16 checkpoint
// would call it.
func BenchmarkQuantizeBF16(b *testing.B) {
	const rows, cols = 1024, 4096
	w := benchQuantInput(rows, cols)
	src := make([]uint16, len(w))
	for i, v := range w {
		src[i] = F32ToBF16(v)
	}
	b.SetBytes(2 * rows * cols)
	b.ResetTimer()
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		if _, err := QuantizeBF16(src, rows, cols, 4, 64); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, c0, 2*rows*cols)
}
