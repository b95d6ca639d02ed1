//go:build amd64 && !noasm && gc

#include "textflag.h"

// AVX2+FMA kernels of the fused quantized products; see matvec_amd64.go for
// the layouts (x permuted per 64-column block so that the codes unpacked
// lane-wise from whole words line up with contiguous x).

DATA nibmask<>+0(SB)/8, $0x0000000f0000000f
DATA nibmask<>+8(SB)/8, $0x0000000f0000000f
DATA nibmask<>+16(SB)/8, $0x0000000f0000000f
DATA nibmask<>+24(SB)/8, $0x0000000f0000000f
GLOBL nibmask<>(SB), RODATA|NOPTR, $32

// crumbtab: VPERMPS table mapping a 3-bit index k to float32(k&3).
DATA crumbtab<>+0(SB)/4, $0.0
DATA crumbtab<>+4(SB)/4, $1.0
DATA crumbtab<>+8(SB)/4, $2.0
DATA crumbtab<>+12(SB)/4, $3.0
DATA crumbtab<>+16(SB)/4, $0.0
DATA crumbtab<>+20(SB)/4, $1.0
DATA crumbtab<>+24(SB)/4, $2.0
DATA crumbtab<>+28(SB)/4, $3.0
GLOBL crumbtab<>(SB), RODATA|NOPTR, $32

// crumbshift: per iteration i of a 2-bit block, lanes 0-3 shift by 4i,
// lanes 4-7 by 4i+2.
#define SH2(i, a, b) \
	DATA crumbshift<>+(i*32+0)(SB)/4, $a; DATA crumbshift<>+(i*32+4)(SB)/4, $a; \
	DATA crumbshift<>+(i*32+8)(SB)/4, $a; DATA crumbshift<>+(i*32+12)(SB)/4, $a; \
	DATA crumbshift<>+(i*32+16)(SB)/4, $b; DATA crumbshift<>+(i*32+20)(SB)/4, $b; \
	DATA crumbshift<>+(i*32+24)(SB)/4, $b; DATA crumbshift<>+(i*32+28)(SB)/4, $b
SH2(0, 0, 2)
SH2(1, 4, 6)
SH2(2, 8, 10)
SH2(3, 12, 14)
SH2(4, 16, 18)
SH2(5, 20, 22)
SH2(6, 24, 26)
SH2(7, 28, 30)
GLOBL crumbshift<>(SB), RODATA|NOPTR, $256

// Registers of the 4-row kernels:
//   Y0-Y3 packed words of rows 0-3, Y4-Y7 group accumulators,
//   Y8-Y11 row totals, Y12 mask or table, Y13 x, Y14-Y15 temporaries.
//   SI words of row 0 (rows at +R8, +2*R8, +R9=3*R8), DI permuted x,
//   BX scales / DX biases of row 0 (rows at +R10, +2*R10, +R11=3*R10),
//   R12 Σx/8 vectors (one per group), AX groups left, CX blocks left, R13 blocks per group,
//   R14 the next block (PFNEXT).

#define NIB(sh, xoff) \
	VMOVUPS xoff(DI), Y13; \
	VPSRLD $sh, Y0, Y14; VPAND Y14, Y12, Y14; VCVTDQ2PS Y14, Y14; VFMADD231PS Y13, Y14, Y4; \
	VPSRLD $sh, Y1, Y15; VPAND Y15, Y12, Y15; VCVTDQ2PS Y15, Y15; VFMADD231PS Y13, Y15, Y5; \
	VPSRLD $sh, Y2, Y14; VPAND Y14, Y12, Y14; VCVTDQ2PS Y14, Y14; VFMADD231PS Y13, Y14, Y6; \
	VPSRLD $sh, Y3, Y15; VPAND Y15, Y12, Y15; VCVTDQ2PS Y15, Y15; VFMADD231PS Y13, Y15, Y7

#define CRUMB(i) \
	VMOVUPS (i*32)(DI), Y13; \
	VPSRLVD crumbshift<>+(i*32)(SB), Y0, Y14; VPERMPS Y12, Y14, Y14; VFMADD231PS Y13, Y14, Y4; \
	VPSRLVD crumbshift<>+(i*32)(SB), Y1, Y15; VPERMPS Y12, Y15, Y15; VFMADD231PS Y13, Y15, Y5; \
	VPSRLVD crumbshift<>+(i*32)(SB), Y2, Y14; VPERMPS Y12, Y14, Y14; VFMADD231PS Y13, Y14, Y6; \
	VPSRLVD crumbshift<>+(i*32)(SB), Y3, Y15; VPERMPS Y12, Y15, Y15; VFMADD231PS Y13, Y15, Y7

// GROUPEND folds the group accumulators into the row totals:
// tot += scale·acc + bias·(Σx/8 in every lane), then clears acc.
#define GROUPEND1(sidx, acc, tot) \
	VPBROADCASTW sidx, Y14; VPSLLD $16, Y14, Y14; VFMADD231PS Y14, acc, tot

#define GROUPEND \
	VMOVUPS (R12), Y15; \
	GROUPEND1((BX), Y4, Y8); GROUPEND1((BX)(R10*1), Y5, Y9); \
	GROUPEND1((BX)(R10*2), Y6, Y10); GROUPEND1((BX)(R11*1), Y7, Y11); \
	GROUPEND1((DX), Y15, Y8); GROUPEND1((DX)(R10*1), Y15, Y9); \
	GROUPEND1((DX)(R10*2), Y15, Y10); GROUPEND1((DX)(R11*1), Y15, Y11); \
	VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7; \
	ADDQ $2, BX; ADDQ $2, DX; ADDQ $32, R12

// HSUM reduces the 8 lanes of tot into the float32 at off(DI).
#define HSUM(tot, xtot, off) \
	VEXTRACTF128 $1, tot, X14; VADDPS X14, xtot, xtot; \
	VMOVHLPS xtot, xtot, X14; VADDPS X14, xtot, xtot; \
	VPSHUFD $1, xtot, X14; VADDSS X14, xtot, xtot; \
	VMOVSS xtot, off(DI)

// PFNEXT prefetches the words of the next 4-row block at the columns being
// read now (see matvec512_amd64.s).
#define PFNEXT \
	LEAQ (SI)(R8*4), R14; \
	PREFETCHT0 (R14); PREFETCHT0 (R14)(R8*1); PREFETCHT0 (R14)(R8*2); PREFETCHT0 (R14)(R9*1)

#define PROLOGUE \
	MOVQ w+0(FP), SI; \
	MOVQ wstride+8(FP), R8; \
	LEAQ (R8)(R8*2), R9; \
	MOVQ sc+16(FP), BX; \
	MOVQ bi+24(FP), DX; \
	MOVQ gstride+32(FP), R10; \
	LEAQ (R10)(R10*2), R11; \
	MOVQ xp+40(FP), DI; \
	MOVQ sumx8+48(FP), R12; \
	MOVQ ngroups+56(FP), AX; \
	MOVQ bpg+64(FP), R13; \
	VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7; \
	VXORPS Y8, Y8, Y8; VXORPS Y9, Y9, Y9; VXORPS Y10, Y10, Y10; VXORPS Y11, Y11, Y11

#define EPILOGUE \
	MOVQ out+72(FP), DI; \
	HSUM(Y8, X8, 0); HSUM(Y9, X9, 4); HSUM(Y10, X10, 8); HSUM(Y11, X11, 12); \
	VZEROUPPER; \
	RET

// func dot4x4AVX2(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx8 *float32, ngroups, bpg int, out *[4]float32)
TEXT ·dot4x4AVX2(SB), NOSPLIT, $0-80
	PROLOGUE
	VMOVDQU nibmask<>(SB), Y12

group4:
	MOVQ R13, CX

block4:
	PFNEXT
	VMOVDQU (SI), Y0
	VMOVDQU (SI)(R8*1), Y1
	VMOVDQU (SI)(R8*2), Y2
	VMOVDQU (SI)(R9*1), Y3
	VMOVUPS (DI), Y13
	VPAND Y0, Y12, Y14; VCVTDQ2PS Y14, Y14; VFMADD231PS Y13, Y14, Y4
	VPAND Y1, Y12, Y15; VCVTDQ2PS Y15, Y15; VFMADD231PS Y13, Y15, Y5
	VPAND Y2, Y12, Y14; VCVTDQ2PS Y14, Y14; VFMADD231PS Y13, Y14, Y6
	VPAND Y3, Y12, Y15; VCVTDQ2PS Y15, Y15; VFMADD231PS Y13, Y15, Y7
	NIB(4, 32)
	NIB(8, 64)
	NIB(12, 96)
	NIB(16, 128)
	NIB(20, 160)
	NIB(24, 192)
	VMOVUPS 224(DI), Y13
	VPSRLD $28, Y0, Y14; VCVTDQ2PS Y14, Y14; VFMADD231PS Y13, Y14, Y4
	VPSRLD $28, Y1, Y15; VCVTDQ2PS Y15, Y15; VFMADD231PS Y13, Y15, Y5
	VPSRLD $28, Y2, Y14; VCVTDQ2PS Y14, Y14; VFMADD231PS Y13, Y14, Y6
	VPSRLD $28, Y3, Y15; VCVTDQ2PS Y15, Y15; VFMADD231PS Y13, Y15, Y7
	ADDQ $32, SI
	ADDQ $256, DI
	DECQ CX
	JNZ  block4

	GROUPEND
	DECQ AX
	JNZ  group4
	EPILOGUE

// func dot2x4AVX2(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx8 *float32, ngroups, bpg int, out *[4]float32)
TEXT ·dot2x4AVX2(SB), NOSPLIT, $0-80
	PROLOGUE
	VMOVUPS crumbtab<>(SB), Y12

group2:
	MOVQ R13, CX

block2:
	PFNEXT
	VBROADCASTI128 (SI), Y0
	VBROADCASTI128 (SI)(R8*1), Y1
	VBROADCASTI128 (SI)(R8*2), Y2
	VBROADCASTI128 (SI)(R9*1), Y3
	CRUMB(0)
	CRUMB(1)
	CRUMB(2)
	CRUMB(3)
	CRUMB(4)
	CRUMB(5)
	CRUMB(6)
	CRUMB(7)
	ADDQ $16, SI
	ADDQ $256, DI
	DECQ CX
	JNZ  block2

	GROUPEND
	DECQ AX
	JNZ  group2
	EPILOGUE

// func dotF32AVX2(a, b *float32, n int) float32  (n a multiple of 8)
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

loop32:
	CMPQ CX, $32
	JLT  loop8
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  loop32

loop8:
	CMPQ CX, $8
	JLT  done
	VMOVUPS (SI), Y4
	VFMADD231PS (DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  loop8

done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VADDPS X1, X0, X0
	VPSHUFD $1, X0, X1
	VADDSS X1, X0, X0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotF32x4AVX2(a, x *float32, xstride, n int, out *[4]float32)
// out[t] = Σ_{i<n} a[i]·x[t*xstride/4 + i] for t = 0..3 (xstride in bytes,
// n a multiple of 8): one row against four tokens, each load of a shared.
TEXT ·dotF32x4AVX2(SB), NOSPLIT, $0-40
	MOVQ a+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ xstride+16(FP), R8
	LEAQ (R8)(R8*2), R9
	MOVQ n+24(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

x4loop16:
	CMPQ CX, $16
	JLT  x4loop8
	VMOVUPS (SI), Y8
	VMOVUPS 32(SI), Y9
	VFMADD231PS (DI), Y8, Y0
	VFMADD231PS (DI)(R8*1), Y8, Y1
	VFMADD231PS (DI)(R8*2), Y8, Y2
	VFMADD231PS (DI)(R9*1), Y8, Y3
	VFMADD231PS 32(DI), Y9, Y4
	VFMADD231PS 32(DI)(R8*1), Y9, Y5
	VFMADD231PS 32(DI)(R8*2), Y9, Y6
	VFMADD231PS 32(DI)(R9*1), Y9, Y7
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP  x4loop16

x4loop8:
	CMPQ CX, $8
	JLT  x4done
	VMOVUPS (SI), Y8
	VFMADD231PS (DI), Y8, Y0
	VFMADD231PS (DI)(R8*1), Y8, Y1
	VFMADD231PS (DI)(R8*2), Y8, Y2
	VFMADD231PS (DI)(R9*1), Y8, Y3
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  x4loop8

x4done:
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VADDPS Y6, Y2, Y2
	VADDPS Y7, Y3, Y3
	MOVQ out+32(FP), DI
	HSUM(Y0, X0, 0)
	HSUM(Y1, X1, 4)
	HSUM(Y2, X2, 8)
	HSUM(Y3, X3, 12)
	VZEROUPPER
	RET
