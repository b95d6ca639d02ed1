package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// randMatrix returns a random quantized matrix with random codes, scales in
// ±[0.01, 0.1) and biases in ±0.5 (bf16), and its dense dequantized form.
func randMatrix(rng *rand.Rand, bits, group, rows, cols int) *Matrix {
	m := &Matrix{Bits: bits, GroupSize: group, Rows: rows, Cols: cols}
	m.W = make([]uint32, rows*m.WordsPerRow())
	for i := range m.W {
		m.W[i] = rng.Uint32()
	}
	m.Scales = make([]uint16, rows*m.GroupsPerRow())
	m.Biases = make([]uint16, len(m.Scales))
	for i := range m.Scales {
		s := float32(0.01 + 0.09*rng.Float64())
		if rng.IntN(2) == 0 {
			s = -s
		}
		m.Scales[i] = F32ToBF16(s)
		m.Biases[i] = F32ToBF16(float32(rng.Float64() - 0.5))
	}
	return m
}

func randVec(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// refProduct returns the float64 reference dst[t, r] = Σ w[r,c]·x[t,c] using
// DequantizeRow, and the matching Σ|w·x| used to bound float32 rounding.
func refProduct(m *Matrix, x []float32, tokens int) (want, mag []float64) {
	want = make([]float64, tokens*m.Rows)
	mag = make([]float64, tokens*m.Rows)
	row := make([]float32, m.Cols)
	for r := 0; r < m.Rows; r++ {
		m.DequantizeRow(row, r)
		for t := 0; t < tokens; t++ {
			var s, a float64
			for c, w := range row {
				p := float64(w) * float64(x[t*m.Cols+c])
				s += p
				a += math.Abs(p)
			}
			want[t*m.Rows+r], mag[t*m.Rows+r] = s, a
		}
	}
	return want, mag
}

// checkClose compares got with the float64 reference. float32 accumulation
// in any order errs by at most ~n·ε·Σ|terms|; the fused form also rounds
// scale·Σq·x and bias·Σx, bounded the same way. 1e-5 relative to Σ|terms|
// is a few hundred ε: tight enough to catch a wrong code, scale or group.
func checkClose(t *testing.T, what string, got []float32, want, mag []float64) {
	t.Helper()
	for i := range want {
		tol := 1e-5*mag[i] + 1e-6
		if d := math.Abs(float64(got[i]) - want[i]); d > tol || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s: [%d] got %v want %v (|d|=%g > tol %g)", what, i, got[i], want[i], d, tol)
		}
	}
}

var productShapes = []struct{ bits, group, rows, cols int }{
	{4, 64, 1, 64}, {4, 64, 37, 320}, {4, 32, 13, 96}, {4, 128, 67, 512},
	{4, 64, 130, 1024}, {2, 64, 37, 320}, {2, 32, 9, 96}, {2, 128, 70, 384},
	{2, 64, 131, 1024}, {8, 64, 37, 320}, {8, 32, 11, 160}, {8, 128, 66, 256},
	{4, 64, 515, 256}, {2, 64, 515, 256},
}

func TestMatVec(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, s := range productShapes {
		m := randMatrix(rng, s.bits, s.group, s.rows, s.cols)
		x := randVec(rng, s.cols)
		want, mag := refProduct(m, x, 1)
		got := make([]float32, s.rows)
		MatVec(got, m, x)
		checkClose(t, fmt.Sprintf("MatVec %d-bit g%d %dx%d", s.bits, s.group, s.rows, s.cols), got, want, mag)
	}
}

func TestMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, s := range productShapes {
		for _, tokens := range []int{1, 3, tokenBlock + 5} {
			m := randMatrix(rng, s.bits, s.group, s.rows, s.cols)
			x := randVec(rng, tokens*s.cols)
			want, mag := refProduct(m, x, tokens)
			got := make([]float32, tokens*s.rows)
			MatMul(got, m, x, tokens)
			checkClose(t, fmt.Sprintf("MatMul %d-bit g%d %dx%d t%d", s.bits, s.group, s.rows, s.cols, tokens), got, want, mag)
		}
	}
}

func TestMatVecF32(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, sh := range [][2]int{{1, 1}, {5, 7}, {37, 333}, {300, 1024}} {
		rows, cols := sh[0], sh[1]
		w := randVec(rng, rows*cols)
		for _, tokens := range []int{1, 2, tokenBlock + 3} {
			x := randVec(rng, tokens*cols)
			want := make([]float64, tokens*rows)
			mag := make([]float64, tokens*rows)
			for t := 0; t < tokens; t++ {
				for r := 0; r < rows; r++ {
					for c := 0; c < cols; c++ {
						p := float64(w[r*cols+c]) * float64(x[t*cols+c])
						want[t*rows+r] += p
						mag[t*rows+r] += math.Abs(p)
					}
				}
			}
			got := make([]float32, tokens*rows)
			if tokens == 1 {
				MatVecF32(got, w, rows, cols, x)
			} else {
				MatMulF32(got, w, rows, cols, x, tokens)
			}
			checkClose(t, fmt.Sprintf("dense %dx%d t%d", rows, cols, tokens), got, want, mag)
		}
	}
}

// TestDeterministicThreads checks that results do not depend on how rows are
// split between threads: every split gives the same bits.
func TestDeterministicThreads(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, bits := range []int{2, 4, 8} {
		m := randMatrix(rng, bits, 64, 1003, 512)
		const tokens = 3
		x := randVec(rng, m.Cols*tokens)
		var ref, refMM []float32
		for _, chunk := range []int{0, rowQuantum, 3 * rowQuantum, 1 << 20} {
			testChunkRows = chunk
			mv := make([]float32, m.Rows)
			MatVec(mv, m, x[:m.Cols])
			mm := make([]float32, tokens*m.Rows)
			MatMul(mm, m, x, tokens)
			testChunkRows = 0
			if ref == nil {
				ref, refMM = mv, mm
				continue
			}
			for i := range mv {
				if math.Float32bits(mv[i]) != math.Float32bits(ref[i]) {
					t.Fatalf("%d-bit chunk %d: MatVec row %d: %v != %v", bits, chunk, i, mv[i], ref[i])
				}
			}
			for i := range mm {
				if math.Float32bits(mm[i]) != math.Float32bits(refMM[i]) {
					t.Fatalf("%d-bit chunk %d: MatMul [%d]: %v != %v", bits, chunk, i, mm[i], refMM[i])
				}
			}
		}
	}
}

func TestProductPanicsOnBadLength(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	m := randMatrix(rng, 4, 64, 4, 64)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a short dst")
		}
	}()
	MatVec(make([]float32, 3), m, make([]float32, 64))
}

// TestConcurrentCallers runs products from several goroutines at once (the
// engine computes experts concurrently): the shared pool must give each the
// same bits as a lone call.
func TestConcurrentCallers(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	m := randMatrix(rng, 4, 64, 515, 1024)
	x := randVec(rng, m.Cols)
	want := make([]float32, m.Rows)
	MatVec(want, m, x)
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		go func() {
			got := make([]float32, m.Rows)
			for it := 0; it < 20; it++ {
				MatVec(got, m, x)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						errs <- fmt.Sprintf("row %d: %v != %v", i, got[i], want[i])
						return
					}
				}
			}
			errs <- ""
		}()
	}
	for g := 0; g < 8; g++ {
		if e := <-errs; e != "" {
			t.Fatal(e)
		}
	}
}

// TestInputsUntouched checks that products never write to x or the matrix,
// also later, when pooled buffers pass from an 8-bit product (whose kernels
// read x itself) to a 4- or 2-bit one (which permute x into a buffer of
// their own).
func TestInputsUntouched(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	type input struct {
		bits  int
		m     *Matrix
		x, x0 []float32
		w0    []uint32
	}
	var ins []input
	for it := 0; it < 4; it++ {
		for _, bits := range []int{8, 4, 8, 2, 8} {
			m := randMatrix(rng, bits, 64, 8, 1024)
			x := randVec(rng, m.Cols)
			ins = append(ins, input{bits, m, x, append([]float32(nil), x...), append([]uint32(nil), m.W...)})
			MatVec(make([]float32, m.Rows), m, x)
			MatMul(make([]float32, 2*m.Rows), m, append(append([]float32(nil), x...), x...), 2)
		}
	}
	for k, in := range ins {
		for i := range in.x {
			if math.Float32bits(in.x[i]) != math.Float32bits(in.x0[i]) {
				t.Fatalf("product %d (%d-bit): x[%d] changed from %v to %v", k, in.bits, i, in.x0[i], in.x[i])
			}
		}
		for i := range in.w0 {
			if in.m.W[i] != in.w0[i] {
				t.Fatalf("product %d (%d-bit): W[%d] changed", k, in.bits, i)
			}
		}
	}
}
