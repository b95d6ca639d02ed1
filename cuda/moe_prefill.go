package cuda

import (
	"fmt"
	"os"

	"github.com/fmoe/fmoe/runtime"
)

// Prefill experts grouped by expert on the tensor cores.

// qmmaExperts (worker only) runs the experts of tokens t0..t0+n-1 grouped
// by expert on the tensor cores (kernels_mma.cu): moe_slots lists each
// routed expert's pairs, qmmae4 and qmmad4 read each expert's weights once
// for all of them, swiglu_f and moe_combine finish. false: not applicable
// (4-bit experts in groups of 64, rows of whole 64-row tiles and 128-column
// chunks, the batched layout, QMMA on).
func (b *Backend) qmmaExperts(c *expertCache, table uintptr, xt, d *Tensor, ids, wts, hbuf, part uintptr, t0, n, K int) (bool, error) {
	l := c.layout
	aligned := true // 8-byte code words
	for _, p := range []runtime.ProjLayout{l.Gate, l.Up, l.Down} {
		aligned = aligned && p.WOffset%8 == 0
	}
	if !c.fast || l.Gate.Bits != 4 || l.Up.Bits != 4 || l.Down.Bits != 4 || l.GroupSize != 64 || l.Intermediate%128 != 0 || l.Hidden%128 != 0 ||
		!aligned || c.numExperts*8 > 48<<10 || !b.qmmaOn() || b.d.ccMajor < 8 {
		return false, nil
	}
	np := n * K
	slots, err := b.scratchBuf("moe_slots", (1+np*34)*4)
	if err != nil {
		return true, err
	}
	gbuf, err := b.scratchBuf("moe_g", np*l.Intermediate*4)
	if err != nil {
		return true, err
	}
	ubuf, err := b.scratchBuf("moe_u", np*l.Intermediate*4)
	if err != nil {
		return true, err
	}
	// slots of up to 8·nt pairs: the MMA tile's tokens, sized from the mean
	// pairs per routed expert (a tile mostly empty costs its MMAs and x
	// staging; a full one makes experts with more pairs read twice)
	nt := 4
	if mean := float64(np) / float64(min(np, c.numExperts)); mean <= 6 {
		nt = 1
	} else if mean <= 12 {
		nt = 2
	}
	if v := os.Getenv("FMOE_CUDA_QMMAE_NT"); v == "1" || v == "2" || v == "4" {
		nt = int(v[0] - '0') // benchmarks: the slot size forced
	}
	pids, pw := ids+uintptr(t0*K*4), wts+uintptr(t0*K*4)
	if err := b.d.launch(b.fn["moe_slots"], grid1(1), [3]int{256, 1, 1}, 2*c.numExperts*4, pids, np, c.numExperts, 8*nt, slots); err != nil {
		return true, err
	}
	x := xt.p + uintptr(t0*l.Hidden*4)
	if b.qmmwOn() && nt == 4 && os.Getenv("FMOE_CUDA_QMMAE_WG") != "0" { // =0: benchmarks, the dense GEMMs alone on qmmw4
		return true, b.qmmwExperts(c, table, slots, x, gbuf, ubuf, hbuf, part, pw, d, t0, n, K)
	}
	mt, m2 := 1, ""
	if qmmaeMT() == 2 {
		mt, m2 = 2, "m2"+qmmaPartsSuffix()
	}
	return true, b.expertGEMMs(c, expertKernels{gu: fmt.Sprintf("qmmae4%s_%d", m2, nt), down: fmt.Sprintf("qmmad4%s_%d", m2, nt), rows: 64 * mt, threads: 128},
		table, slots, x, gbuf, ubuf, hbuf, part, pw, d, t0, n, K)
}

// expertKernels names the grouped expert GEMMs of a prompt step: gate/up
// (gu) and down, each block rows output rows of one slot, threads per
// block, and the arguments both take after their own (tail).
type expertKernels struct {
	gu, down      string
	rows, threads int
	tail          []karg
}

// qmmwExperts (worker only) is the rest of qmmaExperts on the warpgroup MMA
// (qmmwe4 / qmmwd4, kernels_wg.cu), for slots of up to 32 pairs.
func (b *Backend) qmmwExperts(c *expertCache, table, slots, x, gbuf, ubuf, hbuf, part, pw uintptr, d *Tensor, t0, n, K int) error {
	lbo, sbo := qmmwOffsets()
	return b.expertGEMMs(c, expertKernels{gu: "qmmwe4", down: "qmmwd4", rows: 128, threads: 256, tail: []karg{lbo, sbo}},
		table, slots, x, gbuf, ubuf, hbuf, part, pw, d, t0, n, K)
}

// expertGEMMs (worker only) launches a prompt step's grouped experts over
// the slots that moe_slots numbered: gate and up of every pair into gbuf
// and ubuf, SwiGLU into hbuf, down into part, then the combine with the
// routing weights pw into d's rows t0..t0+n.
func (b *Backend) expertGEMMs(c *expertCache, k expertKernels, table, slots, x, gbuf, ubuf, hbuf, part, pw uintptr, d *Tensor, t0, n, K int) error {
	l := c.layout
	np := n * K
	th := [3]int{k.threads, 1, 1}
	gu := append([]karg{table, slots, x, gbuf, ubuf, l.Intermediate, l.Hidden, K,
		l.Gate.WOffset, l.Gate.SOffset, l.Gate.BOffset, l.Up.WOffset, l.Up.SOffset, l.Up.BOffset}, k.tail...)
	if err := b.d.launch(b.fn[k.gu], [3]int{2 * l.Intermediate / k.rows, np, 1}, th, 0, gu...); err != nil {
		return err
	}
	if err := b.d.launch(b.fn["swiglu_f"], ewGrid(np*l.Intermediate), blk, 0, hbuf, gbuf, ubuf, int64(np*l.Intermediate)); err != nil {
		return err
	}
	down := append([]karg{table, slots, hbuf, part, l.Hidden, l.Intermediate, l.Down.WOffset, l.Down.SOffset, l.Down.BOffset}, k.tail...)
	if err := b.d.launch(b.fn[k.down], [3]int{cdiv(l.Hidden, k.rows), np, 1}, th, 0, down...); err != nil {
		return err
	}
	return b.d.launch(b.fn["moe_combine"], [3]int{cdiv(l.Hidden, 256), n, 1}, [3]int{256, 1, 1}, 0,
		part, pw, d.p+uintptr(t0*l.Hidden*4), l.Hidden, K, 0)
}

// QMMAEMT is the number of 16-row MMA tiles per warp of the grouped prefill
// experts (qmmae4/qmmad4: 1; qmmae4m2/qmmad4m2: 2, as QMMAMT for the dense
// GEMM); FMOE_CUDA_QMMAE_MT overrides it. Default 2: on an H200 (397B
// shapes, resident, 128-token prefill, docs/benchmarks.md round 10) K=4
// 1178-1194 → 1252-1293 tok/s, K=10 893-903 → 966-1001; per layer qmmae4
// 338 → 263 µs, qmmad4 182 → 137.
var QMMAEMT = 2

func qmmaeMT() int {
	if v := os.Getenv("FMOE_CUDA_QMMAE_MT"); v == "1" || v == "2" {
		return int(v[0] - '0')
	}
	return QMMAEMT
}
