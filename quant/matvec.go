package quant

import "fmt"

// MatVec computes dst[r] = Σ_c w[r,c]·x[c] for the quantized matrix m
// (len(dst) == m.Rows, len(x) == m.Cols), fused per group as
// scale·Σ q·x + bias·Σ x without materialising w. Σ x per group is computed
// once per call and shared by all rows. Rows are split over the package's
// worker pool (GOMAXPROCS goroutines); small matrices run inline. Each row is
// computed by one goroutine in a fixed order, so results are bit-for-bit
// identical whatever the number of threads.
//
// MatVec panics if the buffers do not match m's shape, as slice indexing would.
func MatVec(dst []float32, m *Matrix, x []float32) {
	checkQ(m, len(dst), len(x), 1)
	a := newMVArgs(m, x)
	parallelRows(m.Rows, m.WordsPerRow()*4, func(lo, hi int) { a.rows(dst[lo:hi], lo, hi) })
}

// MatMul computes dst[t, r] = Σ_c w[r,c]·x[t, c] for tokens rows of x
// (x is [tokens, m.Cols], dst is [tokens, m.Rows], both row-major): the
// prefill product. Each weight row is dequantized once per block of tokens
// and reused across them. Parallel and deterministic like MatVec.
func MatMul(dst []float32, m *Matrix, x []float32, tokens int) {
	checkQ(m, len(dst), len(x), tokens)
	if tokens == 1 {
		MatVec(dst, m, x)
		return
	}
	parallelRows(m.Rows, m.WordsPerRow()*4*tokens, func(lo, hi int) {
		buf := make([]float32, m.Cols)
		for t0 := 0; t0 < tokens; t0 += tokenBlock {
			t1 := min(t0+tokenBlock, tokens)
			for r := lo; r < hi; r++ {
				dequantRow(buf, m, r)
				dotTokens(dst, m.Rows, r, buf, x, m.Cols, t0, t1)
			}
		}
	})
}

// dotTokens sets dst[t*rows+r] = w·x[t] for tokens t0 ≤ t < t1, four at a
// time from t0 (which token goes through which kernel depends only on t0
// and t1, fixed by the token count).
func dotTokens(dst []float32, rows, r int, w, x []float32, cols, t0, t1 int) {
	t := t0
	var out [4]float32
	for ; t+4 <= t1; t += 4 {
		dotF32x4(&out, w, x[t*cols:(t+4)*cols], cols)
		for k, v := range out {
			dst[(t+k)*rows+r] = v
		}
	}
	for ; t < t1; t++ {
		dst[t*rows+r] = dotF32(w, x[t*cols:(t+1)*cols])
	}
}

// tokenBlock is how many tokens of x a MatMul worker sweeps per dequantized
// row: enough to amortise the dequantization, few enough that the block of x
// (tokenBlock·Cols floats) stays in cache.
const tokenBlock = 32

// MatVecF32 computes dst[r] = Σ_c w[r*cols+c]·x[c] for a dense row-major
// float32 matrix w [rows, cols]. Parallel and deterministic like MatVec.
func MatVecF32(dst, w []float32, rows, cols int, x []float32) {
	checkF(len(dst), len(w), rows, cols, len(x), 1)
	parallelRows(rows, cols*4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			dst[r] = dotF32(w[r*cols:(r+1)*cols], x)
		}
	})
}

// MatMulF32 computes dst[t, r] = Σ_c w[r, c]·x[t, c] for a dense w
// [rows, cols], x [tokens, cols] and dst [tokens, rows], all row-major.
func MatMulF32(dst, w []float32, rows, cols int, x []float32, tokens int) {
	checkF(len(dst), len(w), rows, cols, len(x), tokens)
	parallelRows(rows, cols*4*tokens, func(lo, hi int) {
		for t0 := 0; t0 < tokens; t0 += tokenBlock {
			t1 := min(t0+tokenBlock, tokens)
			for r := lo; r < hi; r++ {
				dotTokens(dst, rows, r, w[r*cols:(r+1)*cols], x, cols, t0, t1)
			}
		}
	})
}

func checkQ(m *Matrix, nDst, nX, tokens int) {
	if err := m.Validate(); err != nil {
		panic(err)
	}
	if tokens < 1 || nDst != tokens*m.Rows || nX != tokens*m.Cols {
		panic(fmt.Sprintf("quant: product of %dx%d matrix: len(dst)=%d len(x)=%d for %d tokens",
			m.Rows, m.Cols, nDst, nX, tokens))
	}
}

func checkF(nDst, nW, rows, cols, nX, tokens int) {
	if rows < 0 || cols < 0 || tokens < 1 || nW != rows*cols || nDst != tokens*rows || nX != tokens*cols {
		panic(fmt.Sprintf("quant: dense product %dx%d: len(w)=%d len(dst)=%d len(x)=%d for %d tokens",
			rows, cols, nW, nDst, nX, tokens))
	}
}

// groupSums returns Σ x over each group of the row.
func groupSums(x []float32, group int) []float32 {
	s := make([]float32, len(x)/group)
	for g := range s {
		var acc float32
		for _, v := range x[g*group : (g+1)*group] {
			acc += v
		}
		s[g] = acc
	}
	return s
}

// DotF32 returns Σ a[i]·b[i] over len(a) (b at least as long), with the
// dense kernel the matrix products use (SIMD where available).
func DotF32(a, b []float32) float32 { return dotF32(a, b[:len(a)]) }
