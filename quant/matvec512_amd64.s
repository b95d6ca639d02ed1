//go:build amd64 && !noasm && gc

#include "textflag.h"

// AVX-512 kernels of the fused quantized products (see matvec_amd64.go):
// 64-column blocks, the block's words broadcast so that 16 lanes × 4 steps
// cover its 64 codes; VPERMPS with a 16-entry table turns the low 4 bits of
// each shifted word into the code's float value (no mask, no convert).
// Scales are widened to float32 once per 4-row block into a scratch area;
// the bias term Σ_g bias_g·Σx_g is one vector dot product per row.

DATA shift4z<>+0(SB)/4, $0
DATA shift4z<>+4(SB)/4, $0
DATA shift4z<>+8(SB)/4, $0
DATA shift4z<>+12(SB)/4, $0
DATA shift4z<>+16(SB)/4, $0
DATA shift4z<>+20(SB)/4, $0
DATA shift4z<>+24(SB)/4, $0
DATA shift4z<>+28(SB)/4, $0
DATA shift4z<>+32(SB)/4, $4
DATA shift4z<>+36(SB)/4, $4
DATA shift4z<>+40(SB)/4, $4
DATA shift4z<>+44(SB)/4, $4
DATA shift4z<>+48(SB)/4, $4
DATA shift4z<>+52(SB)/4, $4
DATA shift4z<>+56(SB)/4, $4
DATA shift4z<>+60(SB)/4, $4
DATA shift4z<>+64(SB)/4, $8
DATA shift4z<>+68(SB)/4, $8
DATA shift4z<>+72(SB)/4, $8
DATA shift4z<>+76(SB)/4, $8
DATA shift4z<>+80(SB)/4, $8
DATA shift4z<>+84(SB)/4, $8
DATA shift4z<>+88(SB)/4, $8
DATA shift4z<>+92(SB)/4, $8
DATA shift4z<>+96(SB)/4, $12
DATA shift4z<>+100(SB)/4, $12
DATA shift4z<>+104(SB)/4, $12
DATA shift4z<>+108(SB)/4, $12
DATA shift4z<>+112(SB)/4, $12
DATA shift4z<>+116(SB)/4, $12
DATA shift4z<>+120(SB)/4, $12
DATA shift4z<>+124(SB)/4, $12
DATA shift4z<>+128(SB)/4, $16
DATA shift4z<>+132(SB)/4, $16
DATA shift4z<>+136(SB)/4, $16
DATA shift4z<>+140(SB)/4, $16
DATA shift4z<>+144(SB)/4, $16
DATA shift4z<>+148(SB)/4, $16
DATA shift4z<>+152(SB)/4, $16
DATA shift4z<>+156(SB)/4, $16
DATA shift4z<>+160(SB)/4, $20
DATA shift4z<>+164(SB)/4, $20
DATA shift4z<>+168(SB)/4, $20
DATA shift4z<>+172(SB)/4, $20
DATA shift4z<>+176(SB)/4, $20
DATA shift4z<>+180(SB)/4, $20
DATA shift4z<>+184(SB)/4, $20
DATA shift4z<>+188(SB)/4, $20
DATA shift4z<>+192(SB)/4, $24
DATA shift4z<>+196(SB)/4, $24
DATA shift4z<>+200(SB)/4, $24
DATA shift4z<>+204(SB)/4, $24
DATA shift4z<>+208(SB)/4, $24
DATA shift4z<>+212(SB)/4, $24
DATA shift4z<>+216(SB)/4, $24
DATA shift4z<>+220(SB)/4, $24
DATA shift4z<>+224(SB)/4, $28
DATA shift4z<>+228(SB)/4, $28
DATA shift4z<>+232(SB)/4, $28
DATA shift4z<>+236(SB)/4, $28
DATA shift4z<>+240(SB)/4, $28
DATA shift4z<>+244(SB)/4, $28
DATA shift4z<>+248(SB)/4, $28
DATA shift4z<>+252(SB)/4, $28
GLOBL shift4z<>(SB), RODATA|NOPTR, $256

DATA shift2z<>+0(SB)/4, $0
DATA shift2z<>+4(SB)/4, $0
DATA shift2z<>+8(SB)/4, $0
DATA shift2z<>+12(SB)/4, $0
DATA shift2z<>+16(SB)/4, $2
DATA shift2z<>+20(SB)/4, $2
DATA shift2z<>+24(SB)/4, $2
DATA shift2z<>+28(SB)/4, $2
DATA shift2z<>+32(SB)/4, $4
DATA shift2z<>+36(SB)/4, $4
DATA shift2z<>+40(SB)/4, $4
DATA shift2z<>+44(SB)/4, $4
DATA shift2z<>+48(SB)/4, $6
DATA shift2z<>+52(SB)/4, $6
DATA shift2z<>+56(SB)/4, $6
DATA shift2z<>+60(SB)/4, $6
DATA shift2z<>+64(SB)/4, $8
DATA shift2z<>+68(SB)/4, $8
DATA shift2z<>+72(SB)/4, $8
DATA shift2z<>+76(SB)/4, $8
DATA shift2z<>+80(SB)/4, $10
DATA shift2z<>+84(SB)/4, $10
DATA shift2z<>+88(SB)/4, $10
DATA shift2z<>+92(SB)/4, $10
DATA shift2z<>+96(SB)/4, $12
DATA shift2z<>+100(SB)/4, $12
DATA shift2z<>+104(SB)/4, $12
DATA shift2z<>+108(SB)/4, $12
DATA shift2z<>+112(SB)/4, $14
DATA shift2z<>+116(SB)/4, $14
DATA shift2z<>+120(SB)/4, $14
DATA shift2z<>+124(SB)/4, $14
DATA shift2z<>+128(SB)/4, $16
DATA shift2z<>+132(SB)/4, $16
DATA shift2z<>+136(SB)/4, $16
DATA shift2z<>+140(SB)/4, $16
DATA shift2z<>+144(SB)/4, $18
DATA shift2z<>+148(SB)/4, $18
DATA shift2z<>+152(SB)/4, $18
DATA shift2z<>+156(SB)/4, $18
DATA shift2z<>+160(SB)/4, $20
DATA shift2z<>+164(SB)/4, $20
DATA shift2z<>+168(SB)/4, $20
DATA shift2z<>+172(SB)/4, $20
DATA shift2z<>+176(SB)/4, $22
DATA shift2z<>+180(SB)/4, $22
DATA shift2z<>+184(SB)/4, $22
DATA shift2z<>+188(SB)/4, $22
DATA shift2z<>+192(SB)/4, $24
DATA shift2z<>+196(SB)/4, $24
DATA shift2z<>+200(SB)/4, $24
DATA shift2z<>+204(SB)/4, $24
DATA shift2z<>+208(SB)/4, $26
DATA shift2z<>+212(SB)/4, $26
DATA shift2z<>+216(SB)/4, $26
DATA shift2z<>+220(SB)/4, $26
DATA shift2z<>+224(SB)/4, $28
DATA shift2z<>+228(SB)/4, $28
DATA shift2z<>+232(SB)/4, $28
DATA shift2z<>+236(SB)/4, $28
DATA shift2z<>+240(SB)/4, $30
DATA shift2z<>+244(SB)/4, $30
DATA shift2z<>+248(SB)/4, $30
DATA shift2z<>+252(SB)/4, $30
GLOBL shift2z<>(SB), RODATA|NOPTR, $256

DATA iota16z<>+0(SB)/4, $0.0
DATA iota16z<>+4(SB)/4, $1.0
DATA iota16z<>+8(SB)/4, $2.0
DATA iota16z<>+12(SB)/4, $3.0
DATA iota16z<>+16(SB)/4, $4.0
DATA iota16z<>+20(SB)/4, $5.0
DATA iota16z<>+24(SB)/4, $6.0
DATA iota16z<>+28(SB)/4, $7.0
DATA iota16z<>+32(SB)/4, $8.0
DATA iota16z<>+36(SB)/4, $9.0
DATA iota16z<>+40(SB)/4, $10.0
DATA iota16z<>+44(SB)/4, $11.0
DATA iota16z<>+48(SB)/4, $12.0
DATA iota16z<>+52(SB)/4, $13.0
DATA iota16z<>+56(SB)/4, $14.0
DATA iota16z<>+60(SB)/4, $15.0
GLOBL iota16z<>(SB), RODATA|NOPTR, $64

DATA mod4z<>+0(SB)/4, $0.0
DATA mod4z<>+4(SB)/4, $1.0
DATA mod4z<>+8(SB)/4, $2.0
DATA mod4z<>+12(SB)/4, $3.0
DATA mod4z<>+16(SB)/4, $0.0
DATA mod4z<>+20(SB)/4, $1.0
DATA mod4z<>+24(SB)/4, $2.0
DATA mod4z<>+28(SB)/4, $3.0
DATA mod4z<>+32(SB)/4, $0.0
DATA mod4z<>+36(SB)/4, $1.0
DATA mod4z<>+40(SB)/4, $2.0
DATA mod4z<>+44(SB)/4, $3.0
DATA mod4z<>+48(SB)/4, $0.0
DATA mod4z<>+52(SB)/4, $1.0
DATA mod4z<>+56(SB)/4, $2.0
DATA mod4z<>+60(SB)/4, $3.0
GLOBL mod4z<>(SB), RODATA|NOPTR, $64

// Registers: Z0-Z3 words of rows 0-3, Z4-Z7 group accumulators, Z8-Z11 row
// totals, Z12 value table, Z13 x, Z14-Z15 temporaries, Z16-Z19 shifts of
// steps 0-3. SI words of row 0 (rows at +R8, +2*R8, +R9), DI permuted x,
// R14 float32 scales of row 0 (rows at +BX, +2*BX, +DX), CX blocks left,
// R13 blocks per group, AX groups left, R12 the next block (PFNEXT).

#define STEP(i, sh) \
	VMOVUPS (i*64)(DI), Z13; \
	VPSRLVD sh, Z0, Z14; VPERMPS Z12, Z14, Z14; VFMADD231PS Z13, Z14, Z4; \
	VPSRLVD sh, Z1, Z15; VPERMPS Z12, Z15, Z15; VFMADD231PS Z13, Z15, Z5; \
	VPSRLVD sh, Z2, Z14; VPERMPS Z12, Z14, Z14; VFMADD231PS Z13, Z14, Z6; \
	VPSRLVD sh, Z3, Z15; VPERMPS Z12, Z15, Z15; VFMADD231PS Z13, Z15, Z7

// WIDEN converts 16 bf16 at mem to float32 in Z14.
#define WIDEN(mem) VPMOVZXWD mem, Z14; VPSLLD $16, Z14, Z14

#define HSUM(tot, ytot, xtot, off) \
	VEXTRACTF64X4 $1, tot, Y14; VADDPS Y14, ytot, ytot; \
	VEXTRACTF128 $1, ytot, X14; VADDPS X14, xtot, xtot; \
	VMOVHLPS xtot, xtot, X14; VADDPS X14, xtot, xtot; \
	VPSHUFD $1, xtot, X14; VADDSS X14, xtot, xtot; \
	VMOVSS xtot, off(DI)

// PFNEXT prefetches the words of the next 4-row block at the columns being
// read now, one block ahead in time. The hardware prefetchers alone leave a
// core well below memcpy speed on four interleaved row streams, and a fixed
// distance ahead within the row (the first version: 1 KiB) leaves the start
// of every block unprefetched: 1024x4096 4-bit went from 66% to ~94% of
// memcpy per CPU-second with this (docs/benchmarks.md).
#define PFNEXT \
	LEAQ (SI)(R8*4), R12; \
	PREFETCHT0 (R12); PREFETCHT0 (R12)(R8*1); PREFETCHT0 (R12)(R8*2); PREFETCHT0 (R12)(R9*1)

#define LOAD4(mem, z) VBROADCASTI64X4 mem, z
#define LOAD2(mem, z) VBROADCASTI32X4 mem, z

// func dot4x4AVX512(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx *float32, ngroups, bpg int, out *[4]float32, scratch *float32)
TEXT ·dot4x4AVX512(SB), NOSPLIT, $0-88
	MOVQ ngroups+56(FP), AX
	MOVQ gstride+32(FP), R10
	LEAQ (R10)(R10*2), R11
	MOVQ scratch+80(FP), R14
	MOVQ AX, BX
	SHLQ $2, BX
	LEAQ (BX)(BX*2), DX
	MOVQ sc+16(FP), SI
	MOVQ R14, DI
	MOVQ AX, CX
	SHRQ $4, CX
dot4x4AVX512widen:
	WIDEN((SI)); VMOVUPS Z14, (DI)
	WIDEN((SI)(R10*1)); VMOVUPS Z14, (DI)(BX*1)
	WIDEN((SI)(R10*2)); VMOVUPS Z14, (DI)(BX*2)
	WIDEN((SI)(R11*1)); VMOVUPS Z14, (DI)(DX*1)
	ADDQ $32, SI; ADDQ $64, DI
	DECQ CX; JNZ dot4x4AVX512widen
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R8
	LEAQ (R8)(R8*2), R9
	MOVQ xp+40(FP), DI
	MOVQ bpg+64(FP), R13
	VMOVUPS iota16z<>(SB), Z12
	VMOVDQU32 shift4z<>+0(SB), Z16
	VMOVDQU32 shift4z<>+64(SB), Z17
	VMOVDQU32 shift4z<>+128(SB), Z18
	VMOVDQU32 shift4z<>+192(SB), Z19
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8; VPXORD Z9, Z9, Z9; VPXORD Z10, Z10, Z10; VPXORD Z11, Z11, Z11
dot4x4AVX512group:
	MOVQ R13, CX
dot4x4AVX512block:
	PFNEXT
	LOAD4((SI), Z0); LOAD4((SI)(R8*1), Z1); LOAD4((SI)(R8*2), Z2); LOAD4((SI)(R9*1), Z3)
	STEP(0, Z16); STEP(1, Z17); STEP(2, Z18); STEP(3, Z19)
	ADDQ $32, SI; ADDQ $256, DI
	DECQ CX; JNZ dot4x4AVX512block
	VBROADCASTSS (R14), Z14; VFMADD231PS Z14, Z4, Z8
	VBROADCASTSS (R14)(BX*1), Z15; VFMADD231PS Z15, Z5, Z9
	VBROADCASTSS (R14)(BX*2), Z14; VFMADD231PS Z14, Z6, Z10
	VBROADCASTSS (R14)(DX*1), Z15; VFMADD231PS Z15, Z7, Z11
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7
	ADDQ $4, R14
	DECQ AX; JNZ dot4x4AVX512group
	MOVQ bi+24(FP), SI
	MOVQ sumx+48(FP), DI
	MOVQ ngroups+56(FP), CX
	SHRQ $4, CX
dot4x4AVX512bias:
	VMOVUPS (DI), Z13
	WIDEN((SI)); VFMADD231PS Z13, Z14, Z8
	WIDEN((SI)(R10*1)); VFMADD231PS Z13, Z14, Z9
	WIDEN((SI)(R10*2)); VFMADD231PS Z13, Z14, Z10
	WIDEN((SI)(R11*1)); VFMADD231PS Z13, Z14, Z11
	ADDQ $32, SI; ADDQ $64, DI
	DECQ CX; JNZ dot4x4AVX512bias
	MOVQ out+72(FP), DI
	HSUM(Z8, Y8, X8, 0); HSUM(Z9, Y9, X9, 4); HSUM(Z10, Y10, X10, 8); HSUM(Z11, Y11, X11, 12)
	VZEROUPPER
	RET

// func dot2x4AVX512(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx *float32, ngroups, bpg int, out *[4]float32, scratch *float32)
TEXT ·dot2x4AVX512(SB), NOSPLIT, $0-88
	MOVQ ngroups+56(FP), AX
	MOVQ gstride+32(FP), R10
	LEAQ (R10)(R10*2), R11
	MOVQ scratch+80(FP), R14
	MOVQ AX, BX
	SHLQ $2, BX
	LEAQ (BX)(BX*2), DX
	MOVQ sc+16(FP), SI
	MOVQ R14, DI
	MOVQ AX, CX
	SHRQ $4, CX
dot2x4AVX512widen:
	WIDEN((SI)); VMOVUPS Z14, (DI)
	WIDEN((SI)(R10*1)); VMOVUPS Z14, (DI)(BX*1)
	WIDEN((SI)(R10*2)); VMOVUPS Z14, (DI)(BX*2)
	WIDEN((SI)(R11*1)); VMOVUPS Z14, (DI)(DX*1)
	ADDQ $32, SI; ADDQ $64, DI
	DECQ CX; JNZ dot2x4AVX512widen
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R8
	LEAQ (R8)(R8*2), R9
	MOVQ xp+40(FP), DI
	MOVQ bpg+64(FP), R13
	VMOVUPS mod4z<>(SB), Z12
	VMOVDQU32 shift2z<>+0(SB), Z16
	VMOVDQU32 shift2z<>+64(SB), Z17
	VMOVDQU32 shift2z<>+128(SB), Z18
	VMOVDQU32 shift2z<>+192(SB), Z19
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8; VPXORD Z9, Z9, Z9; VPXORD Z10, Z10, Z10; VPXORD Z11, Z11, Z11
dot2x4AVX512group:
	MOVQ R13, CX
dot2x4AVX512block:
	PFNEXT
	LOAD2((SI), Z0); LOAD2((SI)(R8*1), Z1); LOAD2((SI)(R8*2), Z2); LOAD2((SI)(R9*1), Z3)
	STEP(0, Z16); STEP(1, Z17); STEP(2, Z18); STEP(3, Z19)
	ADDQ $16, SI; ADDQ $256, DI
	DECQ CX; JNZ dot2x4AVX512block
	VBROADCASTSS (R14), Z14; VFMADD231PS Z14, Z4, Z8
	VBROADCASTSS (R14)(BX*1), Z15; VFMADD231PS Z15, Z5, Z9
	VBROADCASTSS (R14)(BX*2), Z14; VFMADD231PS Z14, Z6, Z10
	VBROADCASTSS (R14)(DX*1), Z15; VFMADD231PS Z15, Z7, Z11
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7
	ADDQ $4, R14
	DECQ AX; JNZ dot2x4AVX512group
	MOVQ bi+24(FP), SI
	MOVQ sumx+48(FP), DI
	MOVQ ngroups+56(FP), CX
	SHRQ $4, CX
dot2x4AVX512bias:
	VMOVUPS (DI), Z13
	WIDEN((SI)); VFMADD231PS Z13, Z14, Z8
	WIDEN((SI)(R10*1)); VFMADD231PS Z13, Z14, Z9
	WIDEN((SI)(R10*2)); VFMADD231PS Z13, Z14, Z10
	WIDEN((SI)(R11*1)); VFMADD231PS Z13, Z14, Z11
	ADDQ $32, SI; ADDQ $64, DI
	DECQ CX; JNZ dot2x4AVX512bias
	MOVQ out+72(FP), DI
	HSUM(Z8, Y8, X8, 0); HSUM(Z9, Y9, X9, 4); HSUM(Z10, Y10, X10, 8); HSUM(Z11, Y11, X11, 12)
	VZEROUPPER
	RET

// STEP8 multiplies 16 8-bit codes of each row (bytes 16·i… of the block,
// zero-extended and converted) with 16 consecutive x.
#define STEP8(i) \
	VMOVUPS (i*64)(DI), Z13; \
	VPMOVZXBD (i*16)(SI), Z14; VCVTDQ2PS Z14, Z14; VFMADD231PS Z13, Z14, Z4; \
	VPMOVZXBD (i*16)(SI)(R8*1), Z15; VCVTDQ2PS Z15, Z15; VFMADD231PS Z13, Z15, Z5; \
	VPMOVZXBD (i*16)(SI)(R8*2), Z14; VCVTDQ2PS Z14, Z14; VFMADD231PS Z13, Z14, Z6; \
	VPMOVZXBD (i*16)(SI)(R9*1), Z15; VCVTDQ2PS Z15, Z15; VFMADD231PS Z13, Z15, Z7

// func dot8x4AVX512(w *uint32, wstride int, sc, bi *uint16, gstride int, xp, sumx *float32, ngroups, bpg int, out *[4]float32, scratch *float32)
TEXT ·dot8x4AVX512(SB), NOSPLIT, $0-88
	MOVQ ngroups+56(FP), AX
	MOVQ gstride+32(FP), R10
	LEAQ (R10)(R10*2), R11
	MOVQ scratch+80(FP), R14
	MOVQ AX, BX
	SHLQ $2, BX
	LEAQ (BX)(BX*2), DX
	MOVQ sc+16(FP), SI
	MOVQ R14, DI
	MOVQ AX, CX
	SHRQ $4, CX
dot8x4AVX512widen:
	WIDEN((SI)); VMOVUPS Z14, (DI)
	WIDEN((SI)(R10*1)); VMOVUPS Z14, (DI)(BX*1)
	WIDEN((SI)(R10*2)); VMOVUPS Z14, (DI)(BX*2)
	WIDEN((SI)(R11*1)); VMOVUPS Z14, (DI)(DX*1)
	ADDQ $32, SI; ADDQ $64, DI
	DECQ CX; JNZ dot8x4AVX512widen
	MOVQ w+0(FP), SI
	MOVQ wstride+8(FP), R8
	LEAQ (R8)(R8*2), R9
	MOVQ xp+40(FP), DI
	MOVQ bpg+64(FP), R13
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8; VPXORD Z9, Z9, Z9; VPXORD Z10, Z10, Z10; VPXORD Z11, Z11, Z11
dot8x4AVX512group:
	MOVQ R13, CX
dot8x4AVX512block:
	PFNEXT
	STEP8(0); STEP8(1); STEP8(2); STEP8(3)
	ADDQ $64, SI; ADDQ $256, DI
	DECQ CX; JNZ dot8x4AVX512block
	VBROADCASTSS (R14), Z14; VFMADD231PS Z14, Z4, Z8
	VBROADCASTSS (R14)(BX*1), Z15; VFMADD231PS Z15, Z5, Z9
	VBROADCASTSS (R14)(BX*2), Z14; VFMADD231PS Z14, Z6, Z10
	VBROADCASTSS (R14)(DX*1), Z15; VFMADD231PS Z15, Z7, Z11
	VPXORD Z4, Z4, Z4; VPXORD Z5, Z5, Z5; VPXORD Z6, Z6, Z6; VPXORD Z7, Z7, Z7
	ADDQ $4, R14
	DECQ AX; JNZ dot8x4AVX512group
	MOVQ bi+24(FP), SI
	MOVQ sumx+48(FP), DI
	MOVQ ngroups+56(FP), CX
	SHRQ $4, CX
dot8x4AVX512bias:
	VMOVUPS (DI), Z13
	WIDEN((SI)); VFMADD231PS Z13, Z14, Z8
	WIDEN((SI)(R10*1)); VFMADD231PS Z13, Z14, Z9
	WIDEN((SI)(R10*2)); VFMADD231PS Z13, Z14, Z10
	WIDEN((SI)(R11*1)); VFMADD231PS Z13, Z14, Z11
	ADDQ $32, SI; ADDQ $64, DI
	DECQ CX; JNZ dot8x4AVX512bias
	MOVQ out+72(FP), DI
	HSUM(Z8, Y8, X8, 0); HSUM(Z9, Y9, X9, 4); HSUM(Z10, Y10, X10, 8); HSUM(Z11, Y11, X11, 12)
	VZEROUPPER
	RET

// x preparation (see permuteX): per 64-column block, output vector i lane l
// takes x[src] with src = 8·(l mod 8) + 2i + l/8 (4-bit) or 16·(l mod 4) +
// 4i + l/4 (2-bit): VPERMT2PS of the block's first and second halves by
// src mod 32, blended by mask with the lanes whose src is in the second
// half. The group sums add the block's four vectors lane-wise and reduce
// once per group.

DATA px4idx<>+0(SB)/4, $0
DATA px4idx<>+4(SB)/4, $8
DATA px4idx<>+8(SB)/4, $16
DATA px4idx<>+12(SB)/4, $24
DATA px4idx<>+16(SB)/4, $0
DATA px4idx<>+20(SB)/4, $8
DATA px4idx<>+24(SB)/4, $16
DATA px4idx<>+28(SB)/4, $24
DATA px4idx<>+32(SB)/4, $1
DATA px4idx<>+36(SB)/4, $9
DATA px4idx<>+40(SB)/4, $17
DATA px4idx<>+44(SB)/4, $25
DATA px4idx<>+48(SB)/4, $1
DATA px4idx<>+52(SB)/4, $9
DATA px4idx<>+56(SB)/4, $17
DATA px4idx<>+60(SB)/4, $25
DATA px4idx<>+64(SB)/4, $2
DATA px4idx<>+68(SB)/4, $10
DATA px4idx<>+72(SB)/4, $18
DATA px4idx<>+76(SB)/4, $26
DATA px4idx<>+80(SB)/4, $2
DATA px4idx<>+84(SB)/4, $10
DATA px4idx<>+88(SB)/4, $18
DATA px4idx<>+92(SB)/4, $26
DATA px4idx<>+96(SB)/4, $3
DATA px4idx<>+100(SB)/4, $11
DATA px4idx<>+104(SB)/4, $19
DATA px4idx<>+108(SB)/4, $27
DATA px4idx<>+112(SB)/4, $3
DATA px4idx<>+116(SB)/4, $11
DATA px4idx<>+120(SB)/4, $19
DATA px4idx<>+124(SB)/4, $27
DATA px4idx<>+128(SB)/4, $4
DATA px4idx<>+132(SB)/4, $12
DATA px4idx<>+136(SB)/4, $20
DATA px4idx<>+140(SB)/4, $28
DATA px4idx<>+144(SB)/4, $4
DATA px4idx<>+148(SB)/4, $12
DATA px4idx<>+152(SB)/4, $20
DATA px4idx<>+156(SB)/4, $28
DATA px4idx<>+160(SB)/4, $5
DATA px4idx<>+164(SB)/4, $13
DATA px4idx<>+168(SB)/4, $21
DATA px4idx<>+172(SB)/4, $29
DATA px4idx<>+176(SB)/4, $5
DATA px4idx<>+180(SB)/4, $13
DATA px4idx<>+184(SB)/4, $21
DATA px4idx<>+188(SB)/4, $29
DATA px4idx<>+192(SB)/4, $6
DATA px4idx<>+196(SB)/4, $14
DATA px4idx<>+200(SB)/4, $22
DATA px4idx<>+204(SB)/4, $30
DATA px4idx<>+208(SB)/4, $6
DATA px4idx<>+212(SB)/4, $14
DATA px4idx<>+216(SB)/4, $22
DATA px4idx<>+220(SB)/4, $30
DATA px4idx<>+224(SB)/4, $7
DATA px4idx<>+228(SB)/4, $15
DATA px4idx<>+232(SB)/4, $23
DATA px4idx<>+236(SB)/4, $31
DATA px4idx<>+240(SB)/4, $7
DATA px4idx<>+244(SB)/4, $15
DATA px4idx<>+248(SB)/4, $23
DATA px4idx<>+252(SB)/4, $31
GLOBL px4idx<>(SB), RODATA|NOPTR, $256

DATA px2idx<>+0(SB)/4, $0
DATA px2idx<>+4(SB)/4, $16
DATA px2idx<>+8(SB)/4, $0
DATA px2idx<>+12(SB)/4, $16
DATA px2idx<>+16(SB)/4, $1
DATA px2idx<>+20(SB)/4, $17
DATA px2idx<>+24(SB)/4, $1
DATA px2idx<>+28(SB)/4, $17
DATA px2idx<>+32(SB)/4, $2
DATA px2idx<>+36(SB)/4, $18
DATA px2idx<>+40(SB)/4, $2
DATA px2idx<>+44(SB)/4, $18
DATA px2idx<>+48(SB)/4, $3
DATA px2idx<>+52(SB)/4, $19
DATA px2idx<>+56(SB)/4, $3
DATA px2idx<>+60(SB)/4, $19
DATA px2idx<>+64(SB)/4, $4
DATA px2idx<>+68(SB)/4, $20
DATA px2idx<>+72(SB)/4, $4
DATA px2idx<>+76(SB)/4, $20
DATA px2idx<>+80(SB)/4, $5
DATA px2idx<>+84(SB)/4, $21
DATA px2idx<>+88(SB)/4, $5
DATA px2idx<>+92(SB)/4, $21
DATA px2idx<>+96(SB)/4, $6
DATA px2idx<>+100(SB)/4, $22
DATA px2idx<>+104(SB)/4, $6
DATA px2idx<>+108(SB)/4, $22
DATA px2idx<>+112(SB)/4, $7
DATA px2idx<>+116(SB)/4, $23
DATA px2idx<>+120(SB)/4, $7
DATA px2idx<>+124(SB)/4, $23
DATA px2idx<>+128(SB)/4, $8
DATA px2idx<>+132(SB)/4, $24
DATA px2idx<>+136(SB)/4, $8
DATA px2idx<>+140(SB)/4, $24
DATA px2idx<>+144(SB)/4, $9
DATA px2idx<>+148(SB)/4, $25
DATA px2idx<>+152(SB)/4, $9
DATA px2idx<>+156(SB)/4, $25
DATA px2idx<>+160(SB)/4, $10
DATA px2idx<>+164(SB)/4, $26
DATA px2idx<>+168(SB)/4, $10
DATA px2idx<>+172(SB)/4, $26
DATA px2idx<>+176(SB)/4, $11
DATA px2idx<>+180(SB)/4, $27
DATA px2idx<>+184(SB)/4, $11
DATA px2idx<>+188(SB)/4, $27
DATA px2idx<>+192(SB)/4, $12
DATA px2idx<>+196(SB)/4, $28
DATA px2idx<>+200(SB)/4, $12
DATA px2idx<>+204(SB)/4, $28
DATA px2idx<>+208(SB)/4, $13
DATA px2idx<>+212(SB)/4, $29
DATA px2idx<>+216(SB)/4, $13
DATA px2idx<>+220(SB)/4, $29
DATA px2idx<>+224(SB)/4, $14
DATA px2idx<>+228(SB)/4, $30
DATA px2idx<>+232(SB)/4, $14
DATA px2idx<>+236(SB)/4, $30
DATA px2idx<>+240(SB)/4, $15
DATA px2idx<>+244(SB)/4, $31
DATA px2idx<>+248(SB)/4, $15
DATA px2idx<>+252(SB)/4, $31
GLOBL px2idx<>(SB), RODATA|NOPTR, $256

// func prepX4AVX512(x, xp, sumx *float32, ngroups, bpg int)
TEXT ·prepX4AVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ xp+8(FP), DI
	MOVQ sumx+16(FP), DX
	MOVQ ngroups+24(FP), AX
	MOVQ bpg+32(FP), R13
	VMOVDQU32 px4idx<>+0(SB), Z16
	VMOVDQU32 px4idx<>+64(SB), Z17
	VMOVDQU32 px4idx<>+128(SB), Z18
	VMOVDQU32 px4idx<>+192(SB), Z19
	MOVL $0xF0F0, R8
	KMOVW R8, K1
prepX4AVX512group:
	VPXORD Z8, Z8, Z8
	MOVQ R13, CX
prepX4AVX512block:
	VMOVUPS (SI), Z0; VMOVUPS 64(SI), Z1; VMOVUPS 128(SI), Z2; VMOVUPS 192(SI), Z3
	VADDPS Z0, Z8, Z8; VADDPS Z1, Z8, Z8; VADDPS Z2, Z8, Z8; VADDPS Z3, Z8, Z8
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z16, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z16, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 0(DI)
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z17, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z17, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 64(DI)
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z18, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z18, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 128(DI)
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z19, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z19, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 192(DI)
	ADDQ $256, SI; ADDQ $256, DI
	DECQ CX; JNZ prepX4AVX512block
	VEXTRACTF64X4 $1, Z8, Y9; VADDPS Y9, Y8, Y8
	VEXTRACTF128 $1, Y8, X9; VADDPS X9, X8, X8
	VMOVHLPS X8, X8, X9; VADDPS X9, X8, X8
	VPSHUFD $1, X8, X9; VADDSS X9, X8, X8
	VMOVSS X8, (DX)
	ADDQ $4, DX
	DECQ AX; JNZ prepX4AVX512group
	VZEROUPPER
	RET

// func prepX2AVX512(x, xp, sumx *float32, ngroups, bpg int)
TEXT ·prepX2AVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ xp+8(FP), DI
	MOVQ sumx+16(FP), DX
	MOVQ ngroups+24(FP), AX
	MOVQ bpg+32(FP), R13
	VMOVDQU32 px2idx<>+0(SB), Z16
	VMOVDQU32 px2idx<>+64(SB), Z17
	VMOVDQU32 px2idx<>+128(SB), Z18
	VMOVDQU32 px2idx<>+192(SB), Z19
	MOVL $0xCCCC, R8
	KMOVW R8, K1
prepX2AVX512group:
	VPXORD Z8, Z8, Z8
	MOVQ R13, CX
prepX2AVX512block:
	VMOVUPS (SI), Z0; VMOVUPS 64(SI), Z1; VMOVUPS 128(SI), Z2; VMOVUPS 192(SI), Z3
	VADDPS Z0, Z8, Z8; VADDPS Z1, Z8, Z8; VADDPS Z2, Z8, Z8; VADDPS Z3, Z8, Z8
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z16, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z16, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 0(DI)
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z17, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z17, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 64(DI)
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z18, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z18, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 128(DI)
	VMOVAPS Z0, Z4; VPERMT2PS Z1, Z19, Z4; VMOVAPS Z2, Z5; VPERMT2PS Z3, Z19, Z5
	VBLENDMPS Z5, Z4, K1, Z4; VMOVUPS Z4, 192(DI)
	ADDQ $256, SI; ADDQ $256, DI
	DECQ CX; JNZ prepX2AVX512block
	VEXTRACTF64X4 $1, Z8, Y9; VADDPS Y9, Y8, Y8
	VEXTRACTF128 $1, Y8, X9; VADDPS X9, X8, X8
	VMOVHLPS X8, X8, X9; VADDPS X9, X8, X8
	VPSHUFD $1, X8, X9; VADDSS X9, X8, X8
	VMOVSS X8, (DX)
	ADDQ $4, DX
	DECQ AX; JNZ prepX2AVX512group
	VZEROUPPER
	RET
