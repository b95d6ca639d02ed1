//go:build amd64 && !noasm && gc

#include "textflag.h"

// AVX2 kernels of Quantize; see quantize_amd64.go.

DATA qhalf<>+0(SB)/4, $0x3f000000
GLOBL qhalf<>(SB), RODATA|NOPTR, $4

DATA qmaxf<>+0(SB)/4, $0x7f7fffff
GLOBL qmaxf<>(SB), RODATA|NOPTR, $4

DATA qeps<>+0(SB)/4, $0x33d6bf95 // float32(1e-7)
GLOBL qeps<>(SB), RODATA|NOPTR, $4

DATA qone<>+0(SB)/4, $0x3f800000 // 1.0
GLOBL qone<>(SB), RODATA|NOPTR, $4

DATA qabs<>+0(SB)/4, $0x7fffffff
GLOBL qabs<>(SB), RODATA|NOPTR, $4

DATA qsign<>+0(SB)/4, $0x80000000
GLOBL qsign<>(SB), RODATA|NOPTR, $4

DATA qinf<>+0(SB)/4, $0x7f800000
GLOBL qinf<>(SB), RODATA|NOPTR, $4

DATA q7fff<>+0(SB)/4, $0x7fff
GLOBL q7fff<>(SB), RODATA|NOPTR, $4

DATA q1<>+0(SB)/4, $1
GLOBL q1<>(SB), RODATA|NOPTR, $4

DATA q40<>+0(SB)/4, $0x40
GLOBL q40<>(SB), RODATA|NOPTR, $4

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
	MOVQ          n+8(FP), R13; \
	MOVQ          sc+16(FP), BX; \
	MOVQ          bi+24(FP), DX; \
	MOVQ          shift+32(FP), CX; \
	MOVQ          $0, R12; \
	MOVQ          dst+48(FP), DI; \
	VBROADCASTSS  nbins+40(FP), Y13; \
	VBROADCASTSS  qhalf<>(SB), Y12; \
	VMOVDQU       qperm<>(SB), Y11; \
	VPBROADCASTD  qk16<>(SB), Y10; \
	VPBROADCASTD  qk4<>(SB), Y9

// BF16 rounds the 8 float32 in x to bf16 bit patterns (one per dword) like
// F32ToBF16: (u + 0x7fff + (u>>16 & 1)) >> 16, NaN: u>>16 | 0x40.
#define BF16(x, t1, t2) \
	VPSRLD       $16, x, t1; \
	VPBROADCASTD q1<>(SB), t2; \
	VPAND        t2, t1, t1; \
	VPADDD       x, t1, t1; \
	VPBROADCASTD q7fff<>(SB), t2; \
	VPADDD       t2, t1, t1; \
	VPSRLD       $16, t1, t1; \
	VPBROADCASTD qabs<>(SB), t2; \
	VPAND        t2, x, t2; \
	VPCMPGTD     Y14, t2, t2; \
	VPSRLD       $16, x, x; \
	VPOR         Y13, x, x; \
	VPBLENDVB    t2, x, t1, x

// func rangeParamsAVX2(vals *float32, group, ngroups int, nbins float32, sc, bi *float32, sc16, bi16 *uint16, scratch *float32)
// group is a multiple of 32, ngroups a positive multiple of 8, scratch
// holds 128 float32. Per group: lo = min, hi = max(0, max) (NaNs skipped),
// then groupParams: float32 scale and bias to sc/bi, bf16 to sc16/bi16.
TEXT ·rangeParamsAVX2(SB), NOSPLIT, $0-72
	MOVQ         vals+0(FP), SI
	MOVQ         group+8(FP), R8
	SHRQ         $5, R8
	MOVQ         ngroups+16(FP), AX
	SHRQ         $3, AX
	VBROADCASTSS nbins+24(FP), Y10
	MOVQ         sc+32(FP), BX
	MOVQ         bi+40(FP), CX
	MOVQ         sc16+48(FP), DI
	MOVQ         bi16+56(FP), R11
	MOVQ         scratch+64(FP), R10
	VBROADCASTSS qmaxf<>(SB), Y15
	VPBROADCASTD qinf<>(SB), Y14
	VPBROADCASTD q40<>(SB), Y13

rblock:
	MOVQ $0, R9

rgroup:
	VMOVAPS Y15, Y0
	VMOVAPS Y15, Y1
	VXORPS  Y2, Y2, Y2
	VXORPS  Y3, Y3, Y3
	MOVQ    R8, DX

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
	VMINPS  Y1, Y0, Y0
	VMAXPS  Y3, Y2, Y2
	VMOVUPS Y0, (R10)(R9*1)
	VMOVUPS Y2, 256(R10)(R9*1)
	ADDQ    $32, R9
	CMPQ    R9, $256
	JNE     rgroup

	// Reduce the 8 min vectors at (R10) and the 8 max vectors at 256(R10)
	// to one vector each, lane j = group j. No NaN reaches the
	// accumulators, so the order does not matter.
	// Level 1: pairs (a,b) -> [a01 a23 b01 b23 | a45 a67 b45 b67].
	VMOVUPS (R10), Y0
	VMOVUPS 64(R10), Y1
	VMOVUPS 128(R10), Y2
	VMOVUPS 192(R10), Y3
	VSHUFPS $0x88, 32(R10), Y0, Y4
	VSHUFPS $0xdd, 32(R10), Y0, Y0
	VMINPS  Y4, Y0, Y0
	VSHUFPS $0x88, 96(R10), Y1, Y4
	VSHUFPS $0xdd, 96(R10), Y1, Y1
	VMINPS  Y4, Y1, Y1
	VSHUFPS $0x88, 160(R10), Y2, Y4
	VSHUFPS $0xdd, 160(R10), Y2, Y2
	VMINPS  Y4, Y2, Y2
	VSHUFPS $0x88, 224(R10), Y3, Y4
	VSHUFPS $0xdd, 224(R10), Y3, Y3
	VMINPS  Y4, Y3, Y3
	// Level 2: -> [a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7].
	VSHUFPS $0x88, Y1, Y0, Y4
	VSHUFPS $0xdd, Y1, Y0, Y0
	VMINPS  Y4, Y0, Y0
	VSHUFPS $0x88, Y3, Y2, Y4
	VSHUFPS $0xdd, Y3, Y2, Y2
	VMINPS  Y4, Y2, Y2
	// Level 3: halves.
	VPERM2F128 $0x20, Y2, Y0, Y4
	VPERM2F128 $0x31, Y2, Y0, Y0
	VMINPS     Y4, Y0, Y8

	VMOVUPS 256(R10), Y0
	VMOVUPS 320(R10), Y1
	VMOVUPS 384(R10), Y2
	VMOVUPS 448(R10), Y3
	VSHUFPS $0x88, 288(R10), Y0, Y4
	VSHUFPS $0xdd, 288(R10), Y0, Y0
	VMAXPS  Y4, Y0, Y0
	VSHUFPS $0x88, 352(R10), Y1, Y4
	VSHUFPS $0xdd, 352(R10), Y1, Y1
	VMAXPS  Y4, Y1, Y1
	VSHUFPS $0x88, 416(R10), Y2, Y4
	VSHUFPS $0xdd, 416(R10), Y2, Y2
	VMAXPS  Y4, Y2, Y2
	VSHUFPS $0x88, 480(R10), Y3, Y4
	VSHUFPS $0xdd, 480(R10), Y3, Y3
	VMAXPS  Y4, Y3, Y3
	VSHUFPS $0x88, Y1, Y0, Y4
	VSHUFPS $0xdd, Y1, Y0, Y0
	VMAXPS  Y4, Y0, Y0
	VSHUFPS $0x88, Y3, Y2, Y4
	VSHUFPS $0xdd, Y3, Y2, Y2
	VMAXPS  Y4, Y2, Y2
	VPERM2F128 $0x20, Y2, Y0, Y4
	VPERM2F128 $0x31, Y2, Y0, Y0
	VMAXPS     Y4, Y0, Y9

	// groupParams on 8 groups: lo Y8, hi Y9.
	VSUBPS       Y8, Y9, Y0        // hi - lo
	VDIVPS       Y10, Y0, Y0       // / nbins
	VBROADCASTSS qeps<>(SB), Y1
	VMAXPS       Y0, Y1, Y0        // scale = max(d, 1e-7), NaN d kept
	VBROADCASTSS qabs<>(SB), Y2
	VANDPS       Y8, Y2, Y3        // |lo|
	VANDPS       Y9, Y2, Y4        // |hi|
	VCMPPS       $0x1e, Y4, Y3, Y5 // |lo| > |hi|
	VBLENDVPS    Y5, Y8, Y9, Y6    // edge
	VBROADCASTSS qsign<>(SB), Y7
	VXORPS       Y7, Y0, Y1
	VBLENDVPS    Y5, Y0, Y1, Y0    // scale, negated when edge = hi
	VDIVPS       Y0, Y6, Y1        // r = edge / scale
	VROUNDPS     $3, Y1, Y3        // t = trunc(r)
	VSUBPS       Y3, Y1, Y4        // r - t (exact)
	VANDPS       Y4, Y2, Y4
	VBROADCASTSS qhalf<>(SB), Y5
	VCMPPS       $0x1d, Y5, Y4, Y4 // |r - t| >= 0.5: away from zero
	VANDPS       Y1, Y7, Y5
	VBROADCASTSS qone<>(SB), Y2
	VORPS        Y2, Y5, Y5        // copysign(1, r)
	VADDPS       Y5, Y3, Y5
	VBLENDVPS    Y4, Y5, Y3, Y3    // q0 = roundf(r)
	VXORPS       Y2, Y2, Y2
	VCMPPS       $4, Y2, Y3, Y4    // q0 != 0 (true for NaN, as in Go)
	VDIVPS       Y3, Y6, Y5        // edge / q0
	VBLENDVPS    Y4, Y5, Y0, Y0    // scale
	VANDPS       Y6, Y4, Y1        // bias = edge or 0
	VMOVUPS      Y0, (BX)
	VMOVUPS      Y1, (CX)
	BF16(Y0, Y2, Y3)
	BF16(Y1, Y2, Y3)
	VPACKUSDW    Y1, Y0, Y0        // [s0-3 b0-3 | s4-7 b4-7]
	VPERMQ       $0xd8, Y0, Y0
	VMOVDQU      X0, (DI)
	VEXTRACTI128 $1, Y0, (R11)
	ADDQ         $32, BX
	ADDQ         $32, CX
	ADDQ         $16, DI
	ADDQ         $16, R11
	DECQ         AX
	JNZ          rblock
	VZEROUPPER
	RET

// Registers of the encoders: SI values, R13 values left, BX scales and DX
// biases (one per group), CX log2(group/32), R12 index of the next 32
// values, DI output words; Y15 scale, Y14 bias,
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
	MOVQ         R12, R11; \
	SHRQ         CX, R11; \
	VBROADCASTSS (BX)(R11*4), Y15; \
	VBROADCASTSS (DX)(R11*4), Y14; \
	INCQ         R12; \
	CVT1(0, Y0); \
	CVT1(32, Y1); \
	CVT1(64, Y2); \
	CVT1(96, Y3); \
	VPACKUSDW    Y1, Y0, Y0; \
	VPACKUSDW    Y3, Y2, Y2; \
	VPACKUSWB    Y2, Y0, Y0; \
	VPERMD       Y0, Y11, out; \
	ADDQ         $128, SI

// func encode4AVX2(vals *float32, n int, sc, bi *float32, shift int, nbins float32, dst *uint32)
// n is a positive multiple of 64.
TEXT ·encode4AVX2(SB), NOSPLIT, $0-56
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
	SUBQ       $64, R13
	JNZ        loop4
	VZEROUPPER
	RET

// func encode8AVX2(vals *float32, n int, sc, bi *float32, shift int, nbins float32, dst *uint32)
// n is a positive multiple of 32.
TEXT ·encode8AVX2(SB), NOSPLIT, $0-56
	ENCODE_SETUP

loop8:
	CODES32(Y5)
	VMOVDQU Y5, (DI)
	ADDQ    $32, DI
	SUBQ    $32, R13
	JNZ     loop8
	VZEROUPPER
	RET

// func encode2AVX2(vals *float32, n int, sc, bi *float32, shift int, nbins float32, dst *uint32)
// n is a positive multiple of 128.
TEXT ·encode2AVX2(SB), NOSPLIT, $0-56
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
	SUBQ       $128, R13
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
