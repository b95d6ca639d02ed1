package quant

import (
	"fmt"
	"sync"
	"testing"
)

// The benchmarks stream weights the way the engine does: from memory, not
// from cache. Each iteration uses the next matrix of a set whose total size
// (benchSlab bytes) is well beyond the last-level cache, and BenchmarkMemcpy
// copies the same bytes (matrix-sized slices of the same slab, in the same
// order) with all cores, which is the bandwidth limit the products are
// compared with (`make bench-matvec` prints the ratio).
//
// Besides wall-clock MB/s each reports MB/cpu-s, bytes per second of process
// CPU time: on a box shared with other work it is what the benchmark would
// reach per core with the cores to itself, so the MB/cpu-s ratio of MatVec
// to Memcpy is the comparison that contention does not skew.

const benchSlab = 512 << 20

var slab struct {
	once sync.Once
	w    []uint32
	sb   []uint16
}

func benchSlabs() ([]uint32, []uint16) {
	slab.once.Do(func() {
		slab.w = make([]uint32, benchSlab/4)
		s := uint32(2463534242)
		for i := range slab.w {
			s ^= s << 13
			s ^= s >> 17
			s ^= s << 5
			slab.w[i] = s
		}
		slab.sb = make([]uint16, benchSlab/16)
		for i := range slab.sb {
			slab.sb[i] = F32ToBF16(0.01 + float32(i%97)*1e-4)
		}
	})
	return slab.w, slab.sb
}

// benchMatrices returns matrices of one shape tiling the slab, and the bytes
// of one matrix (weights + scales + biases).
func benchMatrices(bits, group, rows, cols int) ([]*Matrix, int) {
	w, sb := benchSlabs()
	wb, s, _ := ByteSizes(bits, group, rows, cols)
	nw, ns := wb/4, s/2
	n := min(len(w)/nw, len(sb)/(2*ns))
	ms := make([]*Matrix, n)
	for i := range ms {
		ms[i] = &Matrix{Bits: bits, GroupSize: group, Rows: rows, Cols: cols,
			W: w[i*nw : (i+1)*nw], Scales: sb[2*i*ns : (2*i+1)*ns], Biases: sb[(2*i+1)*ns : (2*i+2)*ns]}
	}
	return ms, wb + 2*s
}

// benchShapes are the MatVec benchmarks' shapes: n matrices of rows×cols,
// computed by one MatVecBatch when n > 1 (the names then start with n: a
// decode step's gate and up projections of K=4 experts, 8x1024x4096, share
// one x; their down projections, 4x4096x1024, each have their own).
var benchShapes = []struct{ n, rows, cols int }{
	{1, 1024, 4096}, {1, 4096, 1024}, {1, 16384, 4096}, {8, 1024, 4096}, {4, 4096, 1024},
}

func shapeName(n, rows, cols int) string {
	if n == 1 {
		return fmt.Sprintf("%dx%d", rows, cols)
	}
	return fmt.Sprintf("%dx%dx%d", n, rows, cols)
}

func benchMatVec(b *testing.B, bits int) {
	for _, sh := range benchShapes {
		b.Run(shapeName(sh.n, sh.rows, sh.cols), func(b *testing.B) {
			ms, bytes := benchMatrices(bits, 64, sh.rows, sh.cols)
			xs := make([][]float32, sh.n)
			for k := range xs {
				xs[k] = make([]float32, sh.cols)
				for i := range xs[k] {
					xs[k][i] = float32((i+k)%13) * 0.1
				}
				if sh.rows < sh.cols { // gate/up: one x for all
					xs[k] = xs[0]
				}
			}
			jobs := make([]MatVecJob, sh.n)
			for k := range jobs {
				jobs[k] = MatVecJob{Dst: make([]float32, sh.rows), X: xs[k]}
			}
			b.SetBytes(int64(sh.n * bytes))
			b.ResetTimer()
			c0 := cpuSeconds()
			for i := 0; i < b.N; i++ {
				if sh.n == 1 {
					MatVec(jobs[0].Dst, ms[i%len(ms)], jobs[0].X)
					continue
				}
				for k := range jobs {
					jobs[k].M = ms[(i*sh.n+k)%len(ms)]
				}
				MatVecBatch(jobs)
			}
			reportCPU(b, c0, sh.n*bytes)
		})
	}
}

func BenchmarkMatVec4(b *testing.B) { benchMatVec(b, 4) }
func BenchmarkMatVec2(b *testing.B) { benchMatVec(b, 2) }
func BenchmarkMatVec8(b *testing.B) { benchMatVec(b, 8) }

// BenchmarkMemcpy copies, with all cores, the bytes each MatVec benchmark
// reads: sub-benchmark "4/1024x4096" matches BenchmarkMatVec4/1024x4096 (a
// batch's bytes are copied in one parallel region).
func BenchmarkMemcpy(b *testing.B) {
	for _, bits := range []int{4, 2, 8} {
		for _, sh := range benchShapes {
			b.Run(fmt.Sprintf("%d/%s", bits, shapeName(sh.n, sh.rows, sh.cols)), func(b *testing.B) {
				w, _ := benchSlabs()
				src := U8sFromU32(w)
				_, bytes := benchMatrices(bits, 64, sh.rows, sh.cols)
				bytes *= sh.n
				n := len(src) / bytes
				dst := make([]byte, bytes)
				const rowBytes = 4096
				rows := (bytes + rowBytes - 1) / rowBytes
				b.SetBytes(int64(bytes))
				b.ResetTimer()
				c0 := cpuSeconds()
				for i := 0; i < b.N; i++ {
					s := src[(i%n)*bytes : (i%n+1)*bytes]
					parallelRows(rows, rowBytes, func(lo, hi int) {
						copy(dst[lo*rowBytes:min(hi*rowBytes, bytes)], s[lo*rowBytes:min(hi*rowBytes, bytes)])
					})
				}
				reportCPU(b, c0, bytes)
			})
		}
	}
}

// reportCPU adds the MB/cpu-s metric for b.N iterations of bytes each,
// started when the process had used c0 CPU seconds.
func reportCPU(b *testing.B, c0 float64, bytes int) {
	if c := cpuSeconds() - c0; c0 > 0 && c > 0 {
		b.ReportMetric(float64(bytes)*float64(b.N)/1e6/c, "MB/cpu-s")
	}
}

// BenchmarkMatMul4 is the prefill product: 64 tokens through a 4-bit matrix.
func BenchmarkMatMul4(b *testing.B) {
	const tokens = 64
	ms, bytes := benchMatrices(4, 64, 1024, 4096)
	x := make([]float32, tokens*4096)
	dst := make([]float32, tokens*1024)
	b.SetBytes(int64(bytes))
	b.ResetTimer()
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		MatMul(dst, ms[i%len(ms)], x, tokens)
	}
	reportCPU(b, c0, bytes)
}

// BenchmarkMatVec4Hot runs one cache-resident 4-bit 1024x1024 matrix: the
// kernel's compute limit, without memory traffic.
func BenchmarkMatVec4Hot(b *testing.B) {
	ms, bytes := benchMatrices(4, 64, 1024, 1024)
	x := make([]float32, 1024)
	dst := make([]float32, 1024)
	b.SetBytes(int64(bytes))
	b.ResetTimer()
	c0 := cpuSeconds()
	for i := 0; i < b.N; i++ {
		MatVec(dst, ms[0], x)
	}
	reportCPU(b, c0, bytes)
}
