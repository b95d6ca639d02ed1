//go:build amd64 && !noasm && gc

package quant

import (
	"sync"
	"unsafe"
)

//go:generate python3 matmul512_gen.py

// The AVX-512 prefill product: each worker dequantizes 8 rows at a time
// (SIMD, column order) into a float32 buffer and runs register-blocked
// micro-kernels of 4 rows × up to 6 tokens over it, in column blocks of
// mmKC so that the rows' block and the tokens' block stay in L1 while the
// tokens' block is used by both halves of the 8 rows. The accumulators are
// 16-lane partial sums per (row, token), kept in a small buffer across the
// column blocks and reduced once at the end; every (row, token) sees the
// same sequence of operations whatever the thread count or tile, so results
// are deterministic.

//go:noescape
func gemm4x1AVX512(w *float32, wstride int, x *float32, xstride int, k int, acc *float32)

//go:noescape
func gemm4x2AVX512(w *float32, wstride int, x *float32, xstride int, k int, acc *float32)

//go:noescape
func gemm4x3AVX512(w *float32, wstride int, x *float32, xstride int, k int, acc *float32)

//go:noescape
func gemm4x4AVX512(w *float32, wstride int, x *float32, xstride int, k int, acc *float32)

//go:noescape
func gemm4x5AVX512(w *float32, wstride int, x *float32, xstride int, k int, acc *float32)

//go:noescape
func gemm4x6AVX512(w *float32, wstride int, x *float32, xstride int, k int, acc *float32)

//go:noescape
func dequant4AVX512(w *uint32, sc, bi *uint16, dst *float32, ngroups, bpg int)

//go:noescape
func dequant2AVX512(w *uint32, sc, bi *uint16, dst *float32, ngroups, bpg int)

//go:noescape
func dequant8AVX512(w *uint32, sc, bi *uint16, dst *float32, ngroups, bpg int)

var gemmAVX512 = [...]func(w *float32, wstride int, x *float32, xstride int, k int, acc *float32){
	nil, gemm4x1AVX512, gemm4x2AVX512, gemm4x3AVX512, gemm4x4AVX512, gemm4x5AVX512, gemm4x6AVX512,
}

const (
	mmRows   = 8   // rows dequantized at a time
	mmTokens = 6   // tokens per micro-kernel call
	mmKC     = 512 // columns per block
)

// matMulTiled computes MatMul with the AVX-512 kernels and reports whether
// it could (AVX-512 and groups of a multiple of 64 columns).
func matMulTiled(dst []float32, m *Matrix, x []float32, tokens int) bool {
	if !useAVX512 || m.GroupSize%64 != 0 {
		return false
	}
	dq := dequant4AVX512
	switch m.Bits {
	case 2:
		dq = dequant2AVX512
	case 8:
		dq = dequant8AVX512
	}
	rows, cols := m.Rows, m.Cols
	wpr, gpr, bpg := m.WordsPerRow(), m.GroupsPerRow(), m.GroupSize/64
	tiles := (tokens + mmTokens - 1) / mmTokens
	parallelRows(rows, m.WordsPerRow()*4*tokens, func(lo, hi int) {
		sp := mmPool.Get().(*mmScratch)
		defer mmPool.Put(sp)
		sp.buf = grow(sp.buf, mmRows*cols)
		sp.acc = grow(sp.acc, mmRows*mmTokens*16*tiles)
		buf, acc := sp.buf, sp.acc
		for r0 := lo; r0 < hi; r0 += mmRows {
			nr := min(mmRows, hi-r0)
			for r := 0; r < nr; r++ {
				dq(&m.W[(r0+r)*wpr], &m.Scales[(r0+r)*gpr], &m.Biases[(r0+r)*gpr], &buf[r*cols], gpr, bpg)
			}
			clear(acc)
			for k0 := 0; k0 < cols; k0 += mmKC {
				kc := min(mmKC, cols-k0)
				for ti := 0; ti < tiles; ti++ {
					t0 := ti * mmTokens
					n := min(mmTokens, tokens-t0)
					for h := 0; h < nr; h += 4 {
						a := acc[(ti*2+h/4)*4*mmTokens*16:]
						gemmAVX512[n](&buf[h*cols+k0], cols*4, &x[t0*cols+k0], cols*4, kc, unsafe.SliceData(a))
					}
				}
			}
			for ti := 0; ti < tiles; ti++ {
				t0 := ti * mmTokens
				n := min(mmTokens, tokens-t0)
				for r := 0; r < nr; r++ {
					a := acc[(ti*2+r/4)*4*mmTokens*16:]
					for t := 0; t < n; t++ {
						dst[(t0+t)*rows+r0+r] = hsum16((*[16]float32)(a[16*((r%4)*n+t):]))
					}
				}
			}
		}
	})
	return true
}

// mmScratch is a worker's dequantized rows and accumulators.
type mmScratch struct{ buf, acc []float32 }

var mmPool = sync.Pool{New: func() any { return new(mmScratch) }}

// hsum16 returns the sum of 16 partial sums, in a fixed pairwise order.
func hsum16(a *[16]float32) float32 {
	var b [8]float32
	for i := range b {
		b[i] = a[i] + a[i+8]
	}
	c0, c1, c2, c3 := b[0]+b[4], b[1]+b[5], b[2]+b[6], b[3]+b[7]
	return (c0 + c2) + (c1 + c3)
}
