//go:build amd64 && !noasm && gc

#include "textflag.h"

// AVX2 kernels of Quantize; see quantize_amd64.go.

DATA qhalf<>+0(SB)/4, $0x3f000000
GLOBL qhalf<>(SB), RODATA|NOPTR, $4

DATA qmaxf<>+0(SB)/4, $0x7f7fffff
GLOBL qmaxf<>(SB), RODATA|NOPTR, $4

// VPMADDUBSW multipliers: bytes 1,16 (merge two nibbles) and 1,4 (merge
// two 2-bit codes), low code first.
DATA qk16<>+0(SB)/4, $0x10011001
GLOBL qk16<>(SB), RODATA|NOPTR, $4

DATA qk4<>+0(SB)/4, $0x04010401
GLOBL qk4<>(SB), RODATA|NOPTR, $4

// qperm puts the dwords of VPACKUSWB(VPACKUSDW(a,b), VPACKUSDW(c,d)) back
// in order: a0-3, a4-7, b0-3, ...
DATA qperm<>+0(SB)/4, $0
DATA qperm<>+4(SB)/4, $4
DATA qperm<>+8(SB)/4, $1
DATA qperm<>+12(SB)/4, $5
DATA qperm<>+16(SB)/4, $2
DATA qperm<>+20(SB)/4, $6
DATA qperm<>+24(SB)/4, $3
DATA qperm<>+28(SB)/4, $7
GLOBL qperm<>(SB), RODATA|NOPTR, $32

// ENCODE_SETUP loads the encoders' arguments and constants (defined before
// any TEXT so that vet's frame check does not attribute it to a function).
#define ENCODE_SETUP \
	MOVQ          vals+0(FP), SI; \
	MOVQ          n+8(FP), CX; \
	MOVQ          sc+16(FP), BX; \
	MOVQ          bi+24(FP), DX; \
	MOVQ          dst+40(FP), DI; \
	VBROADCASTSS  nbins+32(FP), Y13; \
	VBROADCASTSS  qhalf<>(SB), Y12; \
	VMOVDQU       qperm<>(SB), Y11; \
	VPBROADCASTD  qk16<>(SB), Y10; \
	VPBROADCASTD  qk4<>(SB), Y9

// func groupRangeAVX2(vals *float32, group, ngroups int, lo, hi *float32)
// group is a multiple of 32, ngroups > 0.
TEXT ·groupRangeAVX2(SB), NOSPLIT, $0-40
	MOVQ vals+0(FP), SI
	MOVQ group+8(FP), CX
	SHRQ $5, CX
	MOVQ ngroups+16(FP), AX
	MOVQ lo+24(FP), DI
	MOVQ hi+32(FP), R8
	VBROADCASTSS qmaxf<>(SB), Y15

rgroup:
	VMOVAPS Y15, Y0
	VMOVAPS Y15, Y1
	VXORPS  Y2, Y2, Y2
	VXORPS  Y3, Y3, Y3
	MOVQ    CX, DX

rstep:
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	// acc = v < acc ? v : acc (NaN v keeps acc), likewise for max.
	VMINPS  Y0, Y4, Y0
	VMAXPS  Y2, Y4, Y2
	VMINPS  Y1, Y5, Y1
	VMAXPS  Y3, Y5, Y3
	VMINPS  Y0, Y6, Y0
	VMAXPS  Y2, Y6, Y2
	VMINPS  Y1, Y7, Y1
	VMAXPS  Y3, Y7, Y3
	ADDQ    $128, SI
	DECQ    DX
	JNZ     rstep

	// No NaN reaches the accumulators: the lane order does not matter.
	VMINPS       Y1, Y0, Y0
	VMAXPS       Y3, Y2, Y2
	VEXTRACTF128 $1, Y0, X1
	VEXTRACTF128 $1, Y2, X3
	VMINPS       X1, X0, X0
	VMAXPS       X3, X2, X2
	VPERMILPS    $0x4e, X0, X1
	VPERMILPS    $0x4e, X2, X3
	VMINPS       X1, X0, X0
	VMAXPS       X3, X2, X2
	VPERMILPS    $0xb1, X0, X1
	VPERMILPS    $0xb1, X2, X3
	VMINPS       X1, X0, X0
	VMAXPS       X3, X2, X2
	VMOVSS       X0, (DI)
	VMOVSS       X2, (R8)
	ADDQ         $4, DI
	ADDQ         $4, R8
	DECQ         AX
	JNZ          rgroup
	VZEROUPPER
	RET

// Registers of the encoders: SI values, CX values left, BX scales and DX
// biases (one per 32 values), DI output words; Y15 scale, Y14 bias,
// Y13 2^bits-1, Y12 0.5, Y11 qperm, Y10 qk16, Y9 qk4; Y0-Y4 temporaries.

// CVT1 turns 8 values at off(SI) into int32 codes in r:
// x = min(nbins, (v-bias)/scale); code = x >= 0.5 ? int(x+0.5) : 0.
#define CVT1(off, r) \
	VMOVUPS    off(SI), r; \
	VSUBPS     Y14, r, r; \
	VDIVPS     Y15, r, r; \
	VMINPS     r, Y13, r; \
	VCMPPS     $0x1d, Y12, r, Y4; \
	VADDPS     Y12, r, r; \
	VCVTTPS2DQ r, r; \
	VPAND      Y4, r, r

// CODES32 turns the next 32 values into 32 byte codes, in order, in out.
#define CODES32(out) \
	VBROADCASTSS (BX), Y15; \
	VBROADCASTSS (DX), Y14; \
	ADDQ         $4, BX; \
	ADDQ         $4, DX; \
	CVT1(0, Y0); \
	CVT1(32, Y1); \
	CVT1(64, Y2); \
	CVT1(96, Y3); \
	VPACKUSDW    Y1, Y0, Y0; \
	VPACKUSDW    Y3, Y2, Y2; \
	VPACKUSWB    Y2, Y0, Y0; \
	VPERMD       Y0, Y11, out; \
	ADDQ         $128, SI

// func encode4AVX2(vals *float32, n int, sc, bi *float32, nbins float32, dst *uint32)
// n is a positive multiple of 64.
TEXT ·encode4AVX2(SB), NOSPLIT, $0-48
	ENCODE_SETUP

loop4:
	CODES32(Y5)
	CODES32(Y6)
	VPMADDUBSW Y10, Y5, Y5
	VPMADDUBSW Y10, Y6, Y6
	VPACKUSWB  Y6, Y5, Y5
	VPERMQ     $0xd8, Y5, Y5
	VMOVDQU    Y5, (DI)
	ADDQ       $32, DI
	SUBQ       $64, CX
	JNZ        loop4
	VZEROUPPER
	RET

// func encode8AVX2(vals *float32, n int, sc, bi *float32, nbins float32, dst *uint32)
// n is a positive multiple of 32.
TEXT ·encode8AVX2(SB), NOSPLIT, $0-48
	ENCODE_SETUP

loop8:
	CODES32(Y5)
	VMOVDQU Y5, (DI)
	ADDQ    $32, DI
	SUBQ    $32, CX
	JNZ     loop8
	VZEROUPPER
	RET

// func encode2AVX2(vals *float32, n int, sc, bi *float32, nbins float32, dst *uint32)
// n is a positive multiple of 128.
TEXT ·encode2AVX2(SB), NOSPLIT, $0-48
	ENCODE_SETUP

loop2:
	CODES32(Y5)
	CODES32(Y6)
	VPMADDUBSW Y9, Y5, Y5
	VPMADDUBSW Y9, Y6, Y6
	VPACKUSWB  Y6, Y5, Y5
	VPERMQ     $0xd8, Y5, Y5
	VPMADDUBSW Y10, Y5, Y5
	CODES32(Y6)
	CODES32(Y7)
	VPMADDUBSW Y9, Y6, Y6
	VPMADDUBSW Y9, Y7, Y7
	VPACKUSWB  Y7, Y6, Y6
	VPERMQ     $0xd8, Y6, Y6
	VPMADDUBSW Y10, Y6, Y6
	VPACKUSWB  Y6, Y5, Y5
	VPERMQ     $0xd8, Y5, Y5
	VMOVDQU    Y5, (DI)
	ADDQ       $32, DI
	SUBQ       $128, CX
	JNZ        loop2
	VZEROUPPER
	RET

// func widenBF16AVX2(dst *float32, src *uint16, n int)
// n is a positive multiple of 32: dst[i] = float32 bits src[i]<<16.
TEXT ·widenBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

widen:
	VPMOVZXWD (SI), Y0
	VPMOVZXWD 16(SI), Y1
	VPMOVZXWD 32(SI), Y2
	VPMOVZXWD 48(SI), Y3
	VPSLLD    $16, Y0, Y0
	VPSLLD    $16, Y1, Y1
	VPSLLD    $16, Y2, Y2
	VPSLLD    $16, Y3, Y3
	VMOVDQU   Y0, (DI)
	VMOVDQU   Y1, 32(DI)
	VMOVDQU   Y2, 64(DI)
	VMOVDQU   Y3, 96(DI)
	ADDQ      $64, SI
	ADDQ      $128, DI
	SUBQ      $32, CX
	JNZ       widen
	VZEROUPPER
	RET
