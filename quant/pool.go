package quant

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// minParallelWork is the estimated work (weight bytes touched) below which a
// product runs inline on the calling goroutine: handing a few microseconds of
// work to other goroutines costs more than it saves.
const minParallelWork = 64 << 10

// rowQuantum is the row granularity of the work split. Chunks always start
// at multiples of it, so the SIMD kernels see the same row blocks whatever
// the number of threads and every row is computed in the same order.
const rowQuantum = 4

// forJob is one parallel loop over chunk indices [0, n).
type forJob struct {
	fn   func(c int)
	n    int
	next atomic.Int64
	wg   sync.WaitGroup
}

func (j *forJob) work() {
	for {
		c := int(j.next.Add(1) - 1)
		if c >= j.n {
			return
		}
		j.fn(c)
	}
}

// pool is the package's worker pool: long-lived goroutines that help
// callers of parallelRows, GOMAXPROCS-1 of them (the caller is the last
// worker), grown when GOMAXPROCS grows.
var pool struct {
	mu      sync.Mutex
	workers atomic.Int32
	jobs    chan *forJob
}

func init() { pool.jobs = make(chan *forJob, 256) }

// threads returns GOMAXPROCS, first making sure the pool has enough helpers.
func threads() int {
	procs := runtime.GOMAXPROCS(0)
	if int(pool.workers.Load()) < procs-1 {
		pool.mu.Lock()
		for int(pool.workers.Load()) < procs-1 {
			pool.workers.Add(1)
			go func() {
				for j := range pool.jobs {
					j.work()
					j.wg.Done()
				}
			}()
		}
		pool.mu.Unlock()
	}
	return procs
}

// testChunkRows, when > 0, overrides the chunk size (tests only; a multiple
// of rowQuantum).
var testChunkRows int

var jobPool = sync.Pool{New: func() any { return new(forJob) }}

// rowChunk returns the chunk size (rows, a multiple of rowQuantum) that
// splits rows of a product of the given total work over procs threads.
func rowChunk(rows, procs int) int {
	if testChunkRows > 0 {
		return testChunkRows
	}
	// About 4 chunks per thread balances load without much claiming traffic.
	chunk := (rows + 4*procs - 1) / (4 * procs)
	return max(rowQuantum, (chunk+rowQuantum-1)/rowQuantum*rowQuantum)
}

// parallelRows calls fn over [0, rows) split into chunks that start at
// multiples of rowQuantum; rowBytes estimates the work per row. Small jobs run
// inline.
func parallelRows(rows, rowBytes int, fn func(lo, hi int)) {
	procs := threads()
	if procs <= 1 || rows <= rowQuantum || rows*rowBytes < minParallelWork {
		fn(0, rows)
		return
	}
	chunk := rowChunk(rows, procs)
	parallelFor((rows+chunk-1)/chunk, procs, func(c int) {
		lo := c * chunk
		fn(lo, min(lo+chunk, rows))
	})
}

// parallelFor calls fn(c) for every chunk c in [0, n) on up to procs
// goroutines: the caller and pool helpers claim chunks in order from a shared
// counter. The caller works too, and never blocks on a busy pool: whatever
// the helpers do not take, it does itself.
func parallelFor(n, procs int, fn func(c int)) {
	if procs <= 1 || n <= 1 {
		for c := 0; c < n; c++ {
			fn(c)
		}
		return
	}
	j := jobPool.Get().(*forJob)
	j.fn, j.n = fn, n
	j.next.Store(0)
	helpers := min(procs-1, n-1)
	for i := 0; i < helpers; i++ {
		j.wg.Add(1)
		select {
		case pool.jobs <- j:
		default:
			j.wg.Done() // pool saturated: do it ourselves
		}
	}
	j.work()
	j.wg.Wait()
	j.fn = nil
	jobPool.Put(j)
}
