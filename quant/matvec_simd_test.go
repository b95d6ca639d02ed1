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

// TestPermuteX checks permuteX against the lane formulas of the SIMD kernels
// (matvec_amd64.go): AVX2 lane l of step i and AVX-512 lane l of step i must
// find the x of the column their code comes from.
func TestPermuteX(t *testing.T) {
	x := make([]float32, 128)
	for i := range x {
		x[i] = float32(i)
	}
	for _, bits := range []int{4, 2} {
		xp := make([]float32, len(x))
		permuteX(xp, x, bits)
		for blk := 0; blk < len(x); blk += 64 {
			for i := 0; i < 8; i++ { // AVX2: 8 lanes × 8 steps
				for l := 0; l < 8; l++ {
					c := 8*l + i
					if bits == 2 {
						c = 16*(l%4) + 2*i + l/4
					}
					if got := xp[blk+8*i+l]; got != x[blk+c] {
						t.Fatalf("%d-bit AVX2 lane %d step %d: x[%v], want x[%d]", bits, l, i, got, blk+c)
					}
				}
			}
			for i := 0; i < 4; i++ { // AVX-512: 16 lanes × 4 steps
				for l := 0; l < 16; l++ {
					c := 8*(l%8) + 2*i + l/8
					if bits == 2 {
						c = 16*(l%4) + 4*i + l/4
					}
					if got := xp[blk+16*i+l]; got != x[blk+c] {
						t.Fatalf("%d-bit AVX-512 lane %d step %d: x[%v], want x[%d]", bits, l, i, got, blk+c)
					}
				}
			}
		}
	}
}

// TestMatVecBatch checks that every job of a batch gets exactly MatVec's bits:
// jobs that share x and jobs that do not, several bit widths and group
// sizes (SIMD and Go kernels), whatever the chunking.
func TestMatVecBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	xa, xb := randVec(rng, 512), randVec(rng, 256)
	type spec struct {
		bits, group, rows int
		x                 []float32
	}
	specs := []spec{
		{4, 64, 260, xa}, {4, 64, 260, xa}, {2, 64, 131, xa}, {8, 64, 70, xa},
		{4, 32, 37, xa}, {4, 64, 1029, xb}, {2, 128, 9, xb}, {4, 64, 3, xb},
	}
	jobs := make([]MatVecJob, len(specs))
	want := make([][]float32, len(specs))
	for i, s := range specs {
		m := randMatrix(rng, s.bits, s.group, s.rows, len(s.x))
		jobs[i] = MatVecJob{Dst: make([]float32, s.rows), M: m, X: s.x}
		want[i] = make([]float32, s.rows)
		MatVec(want[i], m, s.x)
	}
	for _, chunk := range []int{0, rowQuantum, 5 * rowQuantum, 1 << 20} {
		testChunkRows = chunk
		for _, n := range []int{1, 2, len(jobs)} {
			for i := range jobs[:n] {
				clear(jobs[i].Dst)
			}
			MatVecBatch(jobs[:n])
			for i, j := range jobs[:n] {
				for r := range j.Dst {
					if math.Float32bits(j.Dst[r]) != math.Float32bits(want[i][r]) {
						testChunkRows = 0
						t.Fatalf("chunk %d, %d jobs: job %d row %d: %v, MatVec %v", chunk, n, i, r, j.Dst[r], want[i][r])
					}
				}
			}
		}
	}
	testChunkRows = 0
	MatVecBatch(nil)
}
