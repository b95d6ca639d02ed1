package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestKernelsAgainstGo compares the dispatched kernels (SIMD where the
// platform has them) with the pure-Go kernels row by row on random data,
// including all-zero and all-ones codes. The tolerance is float32
// reassociation: 1e-5 of Σ|terms|. With -tags noasm both sides are Go and
// must agree exactly.
func TestKernelsAgainstGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, bits := range []int{2, 4, 8} {
		for _, group := range []int{64, 128, 256} {
			for _, fill := range []string{"random", "zeros", "ones"} {
				rows, cols := 4*3+3, group*3
				m := randMatrix(rng, bits, group, rows, cols)
				for i := range m.W {
					switch fill {
					case "zeros":
						m.W[i] = 0
					case "ones":
						m.W[i] = math.MaxUint32
					}
				}
				x := randVec(rng, cols)
				got := make([]float32, rows)
				a := newMVArgs(m, x)
				a.rows(got, 0, rows)
				_, mag := refProduct(m, x, 1)
				for r := 0; r < rows; r++ {
					want := dotRowGo(m, r, x, a.sumx)
					if d := math.Abs(float64(got[r] - want)); d > 1e-5*mag[r]+1e-6 {
						t.Fatalf("%s", fmt.Sprintf("%d-bit g%d %s row %d: kernel %v, Go %v", bits, group, fill, r, got[r], want))
					}
				}
			}
		}
	}
}

func TestDotF32(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for n := 0; n < 80; n++ {
		a, b := randVec(rng, n), randVec(rng, n)
		var want, mag float64
		for i := range a {
			want += float64(a[i]) * float64(b[i])
			mag += math.Abs(float64(a[i]) * float64(b[i]))
		}
		if got := dotF32(a, b); math.Abs(float64(got)-want) > 1e-5*mag+1e-6 {
			t.Fatalf("n=%d: %v want %v", n, got, want)
		}
	}
}
