# Generates matmul512_amd64.s (go generate ./quant): the AVX-512 prefill
# micro-kernels (fully unrolled, one per token count) and row dequantizers.
import os
HERE = os.path.dirname(os.path.abspath(__file__))
out = []
P = out.append
P("""//go:build amd64 && !noasm && gc

#include "textflag.h"

// AVX-512 kernels of the prefill product (MatMul, see matmul_amd64.go):
// dequantizers of one row into float32 in column order, and register-blocked
// dot-form micro-kernels over 4 dequantized rows × N tokens (N = 1..6).
// The N variants differ only in how many accumulators they keep (the file
// is generated: the kernels are fully unrolled).

// Micro-kernel registers: Z0-Z23 accumulators (row r, token t: Z(r*N+t)),
// Z24-Z27 the 16 columns of rows 0-3, Z28 x. SI row 0 (rows at +R8, +2*R8,
// +R9), DI token 0 (tokens at +R10, +2*R10, +R11, R12 (=DI+4*R10), +R10 from
// R12), CX columns left.
""")
for N in range(1, 7):
    name = f"gemm4x{N}AVX512"
    P(f"// func {name}(w *float32, wstride int, x *float32, xstride int, k int, acc *float32)")
    P(f"// acc[16*(r*{N}+t)+l] += Σ_j w[r][16j+l]·x[t][16j+l] over the k columns (k a")
    P(f"// multiple of 16, strides in bytes).")
    P(f"TEXT ·{name}(SB), NOSPLIT, $0-48")
    P("\tMOVQ w+0(FP), SI")
    P("\tMOVQ wstride+8(FP), R8")
    P("\tLEAQ (R8)(R8*2), R9")
    P("\tMOVQ x+16(FP), DI")
    P("\tMOVQ xstride+24(FP), R10")
    P("\tLEAQ (R10)(R10*2), R11")
    P("\tMOVQ k+32(FP), CX")
    P("\tMOVQ acc+40(FP), DX")
    for i in range(4 * N):
        P(f"\tVMOVUPS {64*i}(DX), Z{i}")
    P(f"{name}loop:")
    P("\tLEAQ (DI)(R10*4), R12")
    wr = ["(SI)", "(SI)(R8*1)", "(SI)(R8*2)", "(SI)(R9*1)"]
    xr = ["(DI)", "(DI)(R10*1)", "(DI)(R10*2)", "(DI)(R11*1)", "(R12)", "(R12)(R10*1)"]
    for r in range(4):
        P(f"\tVMOVUPS {wr[r]}, Z{24+r}")
    for t in range(N):
        P(f"\tVMOVUPS {xr[t]}, Z28")
        for r in range(4):
            P(f"\tVFMADD231PS Z28, Z{24+r}, Z{r*N+t}")
    P("\tADDQ $64, SI")
    P("\tADDQ $64, DI")
    P("\tSUBQ $16, CX")
    P(f"\tJNZ {name}loop")
    for i in range(4 * N):
        P(f"\tVMOVUPS Z{i}, {64*i}(DX)")
    P("\tVZEROUPPER")
    P("\tRET")
    P("")

def table(name, vals, fmt="$%d"):
    for i, v in enumerate(vals):
        P(f"DATA {name}<>+{4*i}(SB)/4, " + (fmt % v))
    P(f"GLOBL {name}<>(SB), RODATA|NOPTR, ${4*len(vals)}")
    P("")

P("// Dequantizer tables: code values, the VPERMD word index and the shift of")
P("// each lane for 16 consecutive columns.")
table("dqiota", [float(i) for i in range(16)], "$%.1f")
table("dqmod4", [float(i % 4) for i in range(16)], "$%.1f")
table("dq4idx", [2 * s + l // 8 for s in range(4) for l in range(16)])
table("dq4shift", [4 * (l % 8) for l in range(16)])
table("dq2shift", [2 * l for l in range(16)])

GROUP = """	MOVWLZX (BX), R8; SHLL $16, R8; VMOVD R8, X14; VPBROADCASTD X14, Z14
	MOVWLZX (DX), R8; SHLL $16, R8; VMOVD R8, X15; VPBROADCASTD X15, Z15
"""
HEAD = """	MOVQ w+0(FP), SI
	MOVQ sc+8(FP), BX
	MOVQ bi+16(FP), DX
	MOVQ dst+24(FP), DI
	MOVQ ngroups+32(FP), AX
	MOVQ bpg+40(FP), R13
"""
P("""// The dequantizers write dst[c] = q[c]·scale[c/group] + bias[c/group] for
// the ngroups·bpg·64 columns of one row, in column order. 4- and 2-bit:
// VPERMPS of the group's table (code value·scale + bias, one FMA per group)
// indexed by the code shifted to the low bits of each lane.
""")
P("// func dequant4AVX512(w *uint32, sc, bi *uint16, dst *float32, ngroups, bpg int)")
P("TEXT ·dequant4AVX512(SB), NOSPLIT, $0-48")
P(HEAD + """	VMOVUPS dqiota<>(SB), Z12
	VMOVDQU32 dq4idx<>+0(SB), Z16
	VMOVDQU32 dq4idx<>+64(SB), Z17
	VMOVDQU32 dq4idx<>+128(SB), Z18
	VMOVDQU32 dq4idx<>+192(SB), Z19
	VMOVDQU32 dq4shift<>(SB), Z20
dq4group:
""" + GROUP + """	VMOVAPS Z15, Z13; VFMADD231PS Z12, Z14, Z13
	MOVQ R13, CX
dq4block:
	VMOVDQU (SI), Y0
	VPERMD Z0, Z16, Z1; VPSRLVD Z20, Z1, Z1; VPERMPS Z13, Z1, Z1; VMOVUPS Z1, (DI)
	VPERMD Z0, Z17, Z2; VPSRLVD Z20, Z2, Z2; VPERMPS Z13, Z2, Z2; VMOVUPS Z2, 64(DI)
	VPERMD Z0, Z18, Z3; VPSRLVD Z20, Z3, Z3; VPERMPS Z13, Z3, Z3; VMOVUPS Z3, 128(DI)
	VPERMD Z0, Z19, Z4; VPSRLVD Z20, Z4, Z4; VPERMPS Z13, Z4, Z4; VMOVUPS Z4, 192(DI)
	ADDQ $32, SI; ADDQ $256, DI
	DECQ CX; JNZ dq4block
	ADDQ $2, BX; ADDQ $2, DX
	DECQ AX; JNZ dq4group
	VZEROUPPER
	RET
""")
P("// func dequant2AVX512(w *uint32, sc, bi *uint16, dst *float32, ngroups, bpg int)")
P("TEXT ·dequant2AVX512(SB), NOSPLIT, $0-48")
P(HEAD + """	VMOVUPS dqmod4<>(SB), Z12
	VMOVDQU32 dq2shift<>(SB), Z20
dq2group:
""" + GROUP + """	VMOVAPS Z15, Z13; VFMADD231PS Z12, Z14, Z13
	MOVQ R13, CX
dq2block:
	VPBROADCASTD (SI), Z1; VPSRLVD Z20, Z1, Z1; VPERMPS Z13, Z1, Z1; VMOVUPS Z1, (DI)
	VPBROADCASTD 4(SI), Z2; VPSRLVD Z20, Z2, Z2; VPERMPS Z13, Z2, Z2; VMOVUPS Z2, 64(DI)
	VPBROADCASTD 8(SI), Z3; VPSRLVD Z20, Z3, Z3; VPERMPS Z13, Z3, Z3; VMOVUPS Z3, 128(DI)
	VPBROADCASTD 12(SI), Z4; VPSRLVD Z20, Z4, Z4; VPERMPS Z13, Z4, Z4; VMOVUPS Z4, 192(DI)
	ADDQ $16, SI; ADDQ $256, DI
	DECQ CX; JNZ dq2block
	ADDQ $2, BX; ADDQ $2, DX
	DECQ AX; JNZ dq2group
	VZEROUPPER
	RET
""")
P("// func dequant8AVX512(w *uint32, sc, bi *uint16, dst *float32, ngroups, bpg int)")
P("TEXT ·dequant8AVX512(SB), NOSPLIT, $0-48")
P(HEAD + """dq8group:
""" + GROUP + """	MOVQ R13, CX
dq8block:
	VPMOVZXBD (SI), Z1; VCVTDQ2PS Z1, Z1; VFMADD213PS Z15, Z14, Z1; VMOVUPS Z1, (DI)
	VPMOVZXBD 16(SI), Z2; VCVTDQ2PS Z2, Z2; VFMADD213PS Z15, Z14, Z2; VMOVUPS Z2, 64(DI)
	VPMOVZXBD 32(SI), Z3; VCVTDQ2PS Z3, Z3; VFMADD213PS Z15, Z14, Z3; VMOVUPS Z3, 128(DI)
	VPMOVZXBD 48(SI), Z4; VCVTDQ2PS Z4, Z4; VFMADD213PS Z15, Z14, Z4; VMOVUPS Z4, 192(DI)
	ADDQ $64, SI; ADDQ $256, DI
	DECQ CX; JNZ dq8block
	ADDQ $2, BX; ADDQ $2, DX
	DECQ AX; JNZ dq8group
	VZEROUPPER
	RET
""")
open(os.path.join(HERE, "matmul512_amd64.s"), "w").write("\n".join(out))
