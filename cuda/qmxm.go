package cuda

import (
	"fmt"
	"os"
	"strings"
)

// qmxm (kernels_mma.cu) is the one-token matvec on the tensor cores: the
// exact three-part bf16 split of qmma with the parts as the MMA's columns,
// for 4-bit weights in groups of 64. It takes qmx's plain and norm batches
// (items with their add and gate epilogues); SwiGLU pairs, the shared gate
// and the router's top-K stay with qmx.

// QMXM turns qmxm on; FMOE_CUDA_QMXM=0/1 overrides it.
var QMXM = true

func qmxmOn() bool {
	if v, ok := os.LookupEnv("FMOE_CUDA_QMXM"); ok {
		return v != "0"
	}
	return QMXM
}

// qmxmSmem is qmxm's shared memory for rows of in columns: x in fragment
// order (groups × 4 steps × 4 quads × 4 parts, 8 bytes each) and Σx per group.
func qmxmSmem(in int) int { return in/64*64*8 + in/64*4 }

// qmxmVariant is the groups in flight per set and the register bound of the
// qmxm kernels ("8", "4", "8b", "4b": b = at least 4 blocks per SM);
// FMOE_CUDA_QMXM_V overrides it.
func qmxmVariant() (ng int, suffix string) {
	v := "8"
	if e := os.Getenv("FMOE_CUDA_QMXM_V"); e != "" {
		v = e
	}
	ng = 8
	if strings.HasPrefix(v, "4") {
		ng = 4
	}
	if strings.HasSuffix(v, "b") {
		suffix = "b"
	}
	return ng, suffix
}

// qmxmKS reports whether KS warps can split rows of in columns (each warp a
// whole number of sets of ng groups).
func qmxmKS(in, ks, ng int) bool { g := in / 64 / ks; return g >= ng && g%ng == 0 }

func qmxmKernelNames() []string {
	var names []string
	for _, ks := range []int{1, 2, 4} {
		for _, v := range []string{"4", "8", "4b", "8b"} {
			names = append(names, fmt.Sprintf("qmxm4_%d_%s", ks, v))
		}
	}
	return names
}

// qmxmApplies reports whether a batch of that mode and weight shape runs as
// qmxm: 4-bit, groups of 64, rows a multiple of 512 columns (whole 16-byte
// scale loads per 8 groups) and at most 8192 (x's shared memory).
func qmxmApplies(mode, bits, group, in int) bool {
	return qmxmOn() && mode&^1 == 0 && bits == 4 && group == 64 && in%512 == 0 && in <= 8192
}

// qmxmLaunch (worker only) fills the tile words of D and launches qmxm;
// false: not applicable (D untouched).
func (b *Backend) qmxmLaunch(bt *fBatch, D *[qbWords]uint64, mode int) (bool, error) {
	w0 := bt.items[0].w
	if bt.swiglu != nil || !qmxmApplies(mode, w0.bits, w0.group, w0.in) {
		return false, nil
	}
	tiles := 0
	for i, it := range bt.items {
		D[qbItem+qbStride*i+8] = uint64(tiles)
		tiles += cdiv(it.w.out, 16)
	}
	D[20] = uint64(tiles)
	smem := qmxmSmem(w0.in)
	// KS warps split a row tile's columns: the fewest that give every
	// resident warp a tile, each warp keeping at least 8 groups.
	ng, suf := qmxmVariant()
	name := func(ks int) string { return fmt.Sprintf("qmxm4_%d_%d%s", ks, ng, suf) }
	if !qmxmKS(w0.in, 1, ng) {
		return false, nil
	}
	ks := 1
	for _, k := range []int{1, 2, 4} {
		if !qmxmKS(w0.in, k, ng) {
			break
		}
		ks = k
		f := b.fn[name(k)]
		occ, err := b.occupancy(f, smem)
		if err != nil {
			return true, err
		}
		if tiles*k >= occ*b.d.sms*4 {
			break
		}
	}
	if v := os.Getenv("FMOE_CUDA_QMXM_KS"); v != "" { // benchmarks
		fmt.Sscan(v, &ks)
	}
	f := b.fn[name(ks)]
	occ, err := b.occupancy(f, smem)
	if err != nil {
		return true, err
	}
	desc, err := b.descFor(D)
	if err != nil {
		return true, err
	}
	return true, b.d.launch(f, grid1(min(cdiv(tiles, 4/ks), occ*b.d.sms)), [3]int{128, 1, 1}, smem, desc)
}

// occupancy is device.occupancy for 128-thread blocks with smem bytes of
// dynamic shared memory, raising the function's limit above 48 KiB first.
func (b *Backend) occupancy(f uintptr, smem int) (int, error) {
	if smem > 48<<10 {
		if err := b.d.setMaxDynamicShared(f, smem); err != nil {
			return 0, err
		}
	}
	return b.d.occupancy(f, 128, smem)
}
