package requant

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkMatrix requantizes one 397B gate projection (1024×4096, group 64);
// bytes/s is 4-bit input bytes.
func BenchmarkMatrix(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	rows, cols := 1024, 4096
	src := quantize4(b, gaussian(r, rows, cols, 0.02), rows, cols)
	for _, m := range []Method{MinMax, MSE} {
		b.Run(string(m), func(b *testing.B) {
			dst := newMatrix2(src)
			b.SetBytes(int64(len(src.W)*4 + len(src.Scales)*4))
			for b.Loop() {
				var st Stats
				if err := Matrix(dst, src, m, &st); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
