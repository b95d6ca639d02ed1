package quant

import (
	"fmt"
	"sync"
	"unsafe"
)

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
	a := mvArgs{m: m, xprep: getPrep(m, x, kernelFor(m))}
	parallelRows(m.Rows, m.WordsPerRow()*4, func(lo, hi int) { a.rows(dst[lo:hi], lo, hi) })
	putPrep(a.xprep)
}

// MatVecJob is one product of a MatVecBatch: Dst = M·X (len(Dst) == M.Rows,
// len(X) == M.Cols).
type MatVecJob struct {
	Dst []float32
	M   *Matrix
	X   []float32
}

// MatVecBatch computes the products of all jobs in one parallel region: the
// rows of all matrices are split over the worker pool together, so several
// small matrices (the gate and up projections of the K experts of a decode
// step, say) keep every core busy where one MatVec each would not, and the
// preparation of x (Σx per group, the SIMD kernels' permutation) is done once
// for the jobs that share the same X slice. Each job's result is bit-for-bit
// that of MatVec(job.Dst, job.M, job.X), whatever the thread count. The
// destinations must not overlap each other or any X.
func MatVecBatch(jobs []MatVecJob) {
	if len(jobs) == 1 {
		MatVec(jobs[0].Dst, jobs[0].M, jobs[0].X)
		return
	}
	args := make([]mvArgs, len(jobs))
	var preps []*xprep
	rows, work := 0, 0
	for i, j := range jobs {
		checkQ(j.M, len(j.Dst), len(j.X), 1)
		kern := kernelFor(j.M)
		var p *xprep
		for _, q := range preps {
			if q.fits(j.M, j.X, kern) {
				p = q
				break
			}
		}
		if p == nil {
			p = getPrep(j.M, j.X, kern)
			preps = append(preps, p)
		}
		args[i] = mvArgs{m: j.M, xprep: p}
		rows += j.M.Rows
		work += j.M.Rows * j.M.WordsPerRow() * 4
	}
	procs := threads()
	if procs <= 1 || work < minParallelWork {
		for i, j := range jobs {
			args[i].rows(j.Dst, 0, j.M.Rows)
		}
	} else {
		// Chunks never straddle two jobs and start at multiples of
		// rowQuantum of their job, as in MatVec.
		type span struct{ job, lo, hi int }
		chunk := rowChunk(rows, procs)
		spans := make([]span, 0, rows/chunk+len(jobs))
		for i, j := range jobs {
			for lo := 0; lo < j.M.Rows; lo += chunk {
				spans = append(spans, span{i, lo, min(lo+chunk, j.M.Rows)})
			}
		}
		parallelFor(len(spans), procs, func(c int) {
			s := spans[c]
			args[s.job].rows(jobs[s.job].Dst[s.lo:s.hi], s.lo, s.hi)
		})
	}
	for _, p := range preps {
		putPrep(p)
	}
}

// mvArgs is one matrix of a product with its prepared x.
type mvArgs struct {
	m *Matrix
	*xprep
}

var prepPool = sync.Pool{New: func() any { return new(xprep) }}

// getPrep returns x prepared for products of m's shape with kernel kern,
// from a pool of buffers (give it back with putPrep).
func getPrep(m *Matrix, x []float32, kern int) *xprep {
	p := prepPool.Get().(*xprep)
	p.fill(m, x, kern)
	return p
}

func putPrep(p *xprep) {
	p.x = nil
	p.clearAlias()
	prepPool.Put(p)
}

// newMVArgs prepares a product of m with x (tests; not pooled).
func newMVArgs(m *Matrix, x []float32) *mvArgs { return newMVArgsKern(m, x, kernelFor(m)) }

func newMVArgsKern(m *Matrix, x []float32, kern int) *mvArgs {
	p := new(xprep)
	p.fill(m, x, kern)
	return &mvArgs{m: m, xprep: p}
}

// sameSlice reports whether a and b are the same elements of memory.
func sameSlice(a, b []float32) bool {
	return len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// grow returns buf resized to n elements, reallocated only if too small.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// MatMul computes dst[t, r] = Σ_c w[r,c]·x[t, c] for tokens rows of x
// (x is [tokens, m.Cols], dst is [tokens, m.Rows], both row-major): the
// prefill product. Each weight row is dequantized once per block of tokens
// and reused across them (with AVX-512: SIMD dequantization of 8 rows at a
// time and register-blocked micro-kernels, see matmul_amd64.go). Parallel
// and deterministic like MatVec.
func MatMul(dst []float32, m *Matrix, x []float32, tokens int) {
	checkQ(m, len(dst), len(x), tokens)
	if tokens == 1 {
		MatVec(dst, m, x)
		return
	}
	if matMulTiled(dst, m, x, tokens) {
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

// groupSums sets s[g] = Σ x over group g (len(s) groups of group columns)
// and returns s. Four interleaved partial sums per group.
func groupSums(s, x []float32, group int) []float32 {
	for g := range s {
		xs := x[g*group : (g+1)*group]
		var a0, a1, a2, a3 float32
		i := 0
		for ; i+4 <= len(xs); i += 4 {
			q := (*[4]float32)(xs[i : i+4])
			a0 += q[0]
			a1 += q[1]
			a2 += q[2]
			a3 += q[3]
		}
		for ; i < len(xs); i++ {
			a0 += xs[i]
		}
		s[g] = (a0 + a1) + (a2 + a3)
	}
	return s
}

// permuteX writes x into xp in the order of the SIMD kernels of bits-bit
// matrices (see matvec_amd64.go), per 64-column block: the 8×8 transpose
// (xp[8j+k] = x[8k+j]) for 4-bit, the 4×16 transpose (xp[4m+b] = x[16b+m])
// for 2-bit.
func permuteX(xp, x []float32, bits int) {
	for blk := 0; blk+64 <= len(x); blk += 64 {
		xs := (*[64]float32)(x[blk : blk+64])
		ps := (*[64]float32)(xp[blk : blk+64])
		if bits == 4 {
			for j := 0; j < 8; j++ {
				for k := 0; k < 8; k++ {
					ps[8*j+k] = xs[8*k+j]
				}
			}
			continue
		}
		for m := 0; m < 16; m++ {
			for b := 0; b < 4; b++ {
				ps[4*m+b] = xs[16*b+m]
			}
		}
	}
}

// DotF32 returns Σ a[i]·b[i] over len(a) (b at least as long), with the
// dense kernel the matrix products use (SIMD where available).
func DotF32(a, b []float32) float32 { return dotF32(a, b[:len(a)]) }
