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
			// 3 groups per row: AVX2 only; 16 and 32: AVX-512 where present.
			for _, fill := range []string{"random", "zeros", "ones", "3 groups", "32 groups"} {
				rows, cols := 4*3+3, group*16
				switch fill {
				case "3 groups":
					cols = group * 3
				case "32 groups":
					cols = group * 32
				}
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
				_, mag := refProduct(m, x, 1)
				for _, a := range testKernels(m, x) {
					got := make([]float32, rows)
					a.rows(got, 0, rows)
					for r := 0; r < rows; r++ {
						want := dotRowGo(m, r, x, a.sumx)
						if d := math.Abs(float64(got[r] - want)); d > 1e-5*mag[r]+1e-6 {
							t.Fatalf("%s", fmt.Sprintf("%d-bit g%d %s kernel %d row %d: %v, Go %v", bits, group, fill, a.kern, r, got[r], want))
						}
					}
				}
			}
		}
	}
}

// TestKernelChoice makes sure the shapes above reach the SIMD kernels this
// machine has (a silent fallback to Go would make the test vacuous).
func TestKernelChoice(t *testing.T) {
	m := &Matrix{Bits: 4, GroupSize: 64, Rows: 8, Cols: 1024}
	for _, bits := range []int{2, 4} {
		m.Bits = bits
		a := newMVArgs(m, make([]float32, m.Cols))
		t.Logf("%d-bit 8x1024 g64: kernel %d", bits, a.kern)
		if simdAvailable() && a.kern == 0 {
			t.Errorf("%d-bit: no SIMD kernel although the CPU has one", bits)
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
