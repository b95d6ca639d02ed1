package cuda

import (
	"fmt"
	"os"
	"unsafe"
)

// Decode-step fusion without engine changes.
//
// The engine drives the backend one operation at a time. For one-token
// activations (decode) the backend defers some of them and launches them
// together when an operation arrives that cannot join (every other entry
// point first flushes what is pending, so results and their order are the
// eager ones):
//
//   - RMSNorm of a whole row is held; the matvecs (or the MoE router) that
//     read its output compute the norm in their prologue (qmvb mode norm),
//     and block 0 writes the normed row for later readers.
//   - Matvecs sharing their input (q/k/v; in_proj qkv/z/b/a; shared expert
//     gate/up) run as one qmvb launch of up to 4 items.
//   - SwiGLU of the two outputs of a gate/up batch is computed in its
//     epilogue; a 1-row matvec with another input (the shared expert's
//     sigmoid gate) joins a one-item batch as its gate, and SigmoidGateAdd
//     and a residual Add of the batch's output go into the epilogue.
//   - The MoE router's matvec and its top-K run as one launch (the last
//     block to finish picks the experts), and the expert down projections
//     apply the routing weights themselves (moe_dnc, no combine launch).
//   - A one-token MoE with all experts resident waits for the shared
//     expert's operations that follow it and runs them as one more expert
//     of its two expert launches (fuse_moe.go).
//
// Options.NoFusion or FMOE_CUDA_FUSE=0 turn it off.

// pendNorm is a deferred RMSNorm of one row: dst = RMSNorm(x)·w.
type pendNorm struct {
	dst, x *Tensor
	w      uintptr
	eps    float32
}

type fItem struct {
	w       *Weight
	x, y    *Tensor
	add, gt *Tensor
}

// fBatch is a pending qmvb launch.
type fBatch struct {
	x      *Tensor
	norm   *pendNorm
	items  []fItem
	swiglu *Tensor
	gate   *fItem
	closed bool
}

type fuser struct {
	off    bool
	norm   *pendNorm
	batch  *fBatch
	moe    *pendMoE // a one-token MoE waiting for its shared expert (fuse_moe.go)
	merged int64    // MoE launches merged with their shared expert
	descs  map[[qbWords]uint64]uintptr
}

const (
	qbWords  = 64
	qbItem   = 24
	qbStride = 10
	qbMax    = 4
)

func (b *Backend) fuseOff() bool {
	return b.fz.off || b.opts.NoFusion || os.Getenv("FMOE_CUDA_FUSE") == "0"
}

// fusableMV reports whether a matvec can run in a qmvb launch.
func fusableMV(w *Weight, x *Tensor) bool {
	return w.w != 0 && x.rows == 1 && vecOK(w.bits, w.group, w.in)
}

// flush (worker only) launches what is pending.
func (b *Backend) flush() error {
	if err := b.flushMoE(); err != nil {
		return err
	}
	if bt := b.fz.batch; bt != nil {
		b.fz.batch = nil
		if err := b.launchBatch(bt, nil); err != nil {
			return err
		}
	}
	if err := b.flushTail(); err != nil {
		return err
	}
	if n := b.fz.norm; n != nil {
		b.fz.norm = nil
		return b.rmsnormLaunch(n.dst, n.x, n.w, n.x.cols, n.eps)
	}
	return nil
}

// takeNorm (worker only) returns the pending norm when it produces x (the
// caller fuses it), after launching it when it does not.
func (b *Backend) takeNorm(x *Tensor) (*pendNorm, error) {
	n := b.fz.norm
	if n == nil {
		return nil, nil
	}
	b.fz.norm = nil
	if n.dst == x {
		return n, nil
	}
	return nil, b.rmsnormLaunch(n.dst, n.x, n.w, n.x.cols, n.eps)
}

// inputs of a batch (tensors its blocks read while others write).
func (bt *fBatch) reads(t *Tensor) bool {
	if t == bt.x || (bt.norm != nil && (t == bt.norm.x || t == bt.norm.dst)) {
		return true
	}
	return bt.gate != nil && t == bt.gate.x
}

// writes reports whether the batch writes t.
func (bt *fBatch) writes(t *Tensor) bool {
	for _, it := range bt.items {
		if t == it.y || t == it.add || t == it.gt {
			return true
		}
	}
	return t == bt.swiglu || (bt.gate != nil && t == bt.gate.y) || (bt.norm != nil && t == bt.norm.dst)
}

func sameQ(a, c *Weight) bool { return a.bits == c.bits && a.group == c.group }

// fuseRMSNorm (worker only) defers a whole-row RMSNorm of one row; false:
// not deferrable (nothing changed).
func (b *Backend) fuseRMSNorm(d, x *Tensor, wp uintptr, glen int, eps float32) (bool, error) {
	if b.fuseOff() || x.rows != 1 || glen != x.cols || x.cols%4 != 0 || d == x {
		return false, nil
	}
	if err := b.flush(); err != nil {
		return true, err
	}
	b.fz.norm = &pendNorm{dst: d, x: x, w: wp, eps: eps}
	return true, nil
}

// fuseMatMul (worker only) adds y = W·x to the pending batch or starts one.
func (b *Backend) fuseMatMul(y *Tensor, w *Weight, x *Tensor) (bool, error) {
	if ok, err := b.moeTake(func(pm *pendMoE) bool { return pm.takeMatMul(y, w, x) }, func() error { return b.matmulOp(y, w, x) }); ok || err != nil {
		return ok, err
	}
	if b.fuseOff() || !fusableMV(w, x) || y == x {
		return false, nil
	}
	if bt := b.fz.batch; bt != nil && !bt.closed && !bt.writes(y) && !bt.reads(y) {
		w0 := bt.items[0].w
		switch {
		case x == bt.x && len(bt.items) < qbMax && bt.gate == nil && sameQ(w, w0) && w.in == w0.in:
			bt.items = append(bt.items, fItem{w: w, x: x, y: y})
			return true, nil
		case w.out == 1 && bt.gate == nil && len(bt.items) == 1 && sameQ(w, w0) && !bt.writes(x):
			bt.gate = &fItem{w: w, x: x, y: y}
			return true, nil
		}
	}
	if err := b.flushBatch(); err != nil {
		return true, err
	}
	n, err := b.takeNorm(x)
	if err != nil {
		return true, err
	}
	if n != nil && (y == n.x || w.in != n.x.cols) {
		if err := b.rmsnormLaunch(n.dst, n.x, n.w, n.x.cols, n.eps); err != nil {
			return true, err
		}
		n = nil
	}
	b.fz.batch = &fBatch{x: x, norm: n, items: []fItem{{w: w, x: x, y: y}}}
	return true, nil
}

func (b *Backend) flushBatch() error {
	if bt := b.fz.batch; bt != nil {
		b.fz.batch = nil
		return b.launchBatch(bt, nil)
	}
	return nil
}

// fuseSwiGLU (worker only): dst = silu(gate)·up in the epilogue of a pending
// gate/up batch.
func (b *Backend) fuseSwiGLU(d, g, u *Tensor) (bool, error) {
	if ok, err := b.moeTake(func(pm *pendMoE) bool { return pm.takeSwiGLU(d, g, u) }, func() error { return b.swigluOp(d, g, u, d.rows*d.cols) }); ok || err != nil {
		return ok, err
	}
	return b.fuseSwiGLUBatch(d, g, u), nil
}

func (b *Backend) fuseSwiGLUBatch(d, g, u *Tensor) bool {
	bt := b.fz.batch
	if b.fuseOff() || bt == nil || bt.closed || bt.gate != nil || len(bt.items) != 2 || bt.items[0].y != g || bt.items[1].y != u ||
		bt.items[0].w.out != bt.items[1].w.out || bt.reads(d) || (d != g && d != u && bt.writes(d)) {
		return false
	}
	bt.swiglu, bt.closed = d, true
	return true
}

// fuseGateAdd (worker only): dst += σ(gate)·x in the epilogue of a pending
// one-item batch whose gate is gate and whose output is x.
func (b *Backend) fuseGateAdd(d, x, gate *Tensor) (bool, error) {
	if ok, err := b.moeTake(func(pm *pendMoE) bool { return pm.takeGateAdd(d, x, gate) }, func() error { return b.gateAddOp(d, x, gate) }); ok || err != nil {
		return ok, err
	}
	return b.fuseGateAddBatch(d, x, gate), nil
}

func (b *Backend) fuseGateAddBatch(d, x, gate *Tensor) bool {
	bt := b.fz.batch
	if b.fuseOff() || bt == nil || bt.closed || bt.gate == nil || bt.gate.y != gate || len(bt.items) != 1 ||
		bt.items[0].y != x || bt.items[0].gt != nil || bt.reads(d) || bt.writes(d) {
		return false
	}
	bt.items[0].gt = d
	return true
}

// fuseAdd (worker only): dst += x where x is a pending item's result.
func (b *Backend) fuseAdd(d, x *Tensor) (bool, error) {
	if ok, err := b.moeTake(func(pm *pendMoE) bool { return pm.takeAdd(d, x) }, func() error { return b.addOp(d, x, d.rows*d.cols) }); ok || err != nil {
		return ok, err
	}
	return b.fuseAddBatch(d, x), nil
}

func (b *Backend) fuseAddBatch(d, x *Tensor) bool {
	bt := b.fz.batch
	if b.fuseOff() || bt == nil || bt.closed || bt.swiglu != nil || bt.reads(d) || bt.writes(d) {
		return false
	}
	for i := range bt.items {
		it := &bt.items[i]
		if it.add == nil && ((it.gt == nil && it.y == x) || (it.gt != nil && it.gt == x)) {
			it.add, bt.closed = d, true
			return true
		}
	}
	return false
}

// topk is the router's top-K folded into a qmvb launch; ov (benchmarks'
// routing override): pinned host memory whose K ids replace the picks.
type topk struct {
	E, K         int
	ids, wts, ov uintptr
}

// launchBatch (worker only) launches a qmvb batch (tk: router top-K).
func (b *Backend) launchBatch(bt *fBatch, tk *topk) error {
	// A split MoE's missing experts go first when the batch reads or writes
	// what they write, or writes what they read.
	if t := b.tail; t != nil && (bt.reads(t.d) || bt.writes(t.d) || bt.writes(t.x)) {
		if err := b.flushTail(); err != nil {
			return err
		}
	}
	var D [qbWords]uint64
	w0 := bt.items[0].w
	mode := 0
	D[1], D[2] = uint64(w0.in), uint64(w0.group)
	if n := bt.norm; n != nil {
		mode |= 1
		D[4] = uint64(*(*uint32)(unsafe.Pointer(&n.eps)))
		D[5], D[6], D[7] = uint64(n.x.p), uint64(n.w), uint64(n.dst.p)
	}
	if g := bt.gate; g != nil {
		mode |= 4
		D[8], D[9], D[10], D[11], D[12], D[19] = uint64(g.w.w), uint64(g.w.s), uint64(g.w.z), uint64(g.x.p), uint64(g.y.p), uint64(g.w.in)
	}
	blocks := 0
	if bt.swiglu != nil {
		mode |= 2
		D[13] = uint64(bt.swiglu.p)
		blocks = cdiv(w0.out, 4)
	}
	if tk != nil {
		mode |= 8
		ctr, err := b.scratchBuf("topk_counter", 4)
		if err != nil {
			return err
		}
		D[14], D[15], D[16], D[17], D[18], D[21] = uint64(tk.E), uint64(tk.K), uint64(tk.ids), uint64(tk.wts), uint64(ctr), uint64(tk.ov)
	}
	smem := 0
	if tk != nil {
		smem = tk.E * 4
	}
	D[0], D[3] = uint64(len(bt.items)), uint64(mode)
	for i, it := range bt.items {
		o := qbItem + qbStride*i
		D[o], D[o+1], D[o+2], D[o+3], D[o+4] = uint64(it.w.w), uint64(it.w.s), uint64(it.w.z), uint64(it.x.p), uint64(it.y.p)
		if bt.norm != nil {
			D[o+3] = uint64(bt.norm.x.p) // normed in the prologue
		}
		if it.add != nil {
			D[o+5] = uint64(it.add.p)
		}
		if it.gt != nil {
			D[o+6] = uint64(it.gt.p)
		}
		D[o+7] = uint64(it.w.out)
	}
	if ok, err := b.qmxLaunch(bt, &D, smem); ok || err != nil {
		return err
	}
	rowsPer := 8
	if bt.swiglu == nil && tk == nil && qmvbWarpRows() {
		total := 0
		for _, it := range bt.items {
			total += it.w.out
		}
		if w0.in/(4*32/w0.bits) <= 128 && total >= QMVBWarpRowsMin {
			mode |= 16
			rowsPer = 32
		}
	}
	D[3] = uint64(mode)
	for i, it := range bt.items {
		o := qbItem + qbStride*i
		if bt.swiglu != nil {
			D[o+8] = 1 << 30 // every block belongs to item 0
			continue
		}
		D[o+8] = uint64(blocks)
		blocks += cdiv(it.w.out, rowsPer)
	}
	desc, err := b.descFor(&D)
	if err != nil {
		return err
	}
	return b.d.launch(b.fn[fmt.Sprintf("qmvb%d%s", w0.bits, qmvbVariant())], grid1(blocks), [3]int{128, 1, 1}, smem, desc)
}

// QMVBWarpRows lets large fused batches of rows of at most 128 chunks (4096
// 4-bit columns) run one warp per 8 rows (32 rows per block, lanes striding
// the columns) instead of 4 warps splitting the columns of 8 rows: at least
// QMVBWarpRowsMin rows in all, no SwiGLU or top-K epilogue. Off by default
// (whole-model decode was slower with it on an H200); FMOE_CUDA_QMVB_ROWS=1
// or 0 overrides it.
var QMVBWarpRows = false

// QMVBWarpRowsMin is the number of rows from which a batch runs in warp rows.
var QMVBWarpRowsMin = 8192

func qmvbWarpRows() bool { return envChoice("FMOE_CUDA_QMVB_ROWS", "1", "0", QMVBWarpRows) }

// QMVBVariant is the suffix of the fused decode matvec kernel: "" (qmvb?,
// 128 registers) or "o" (qmvb?o, capped at 96 registers for 5 blocks per SM;
// NVRTC 13.0 spills there, ncu counted 109,568 local-memory requests in one
// 16384×4096 launch, and it was not faster). FMOE_CUDA_QMVB overrides it.
var QMVBVariant = ""

func qmvbVariant() string {
	if v, ok := os.LookupEnv("FMOE_CUDA_QMVB"); ok && (v == "" || v == "o") {
		return v
	}
	return QMVBVariant
}

// descFor (worker only) returns the device copy of a descriptor (uploaded
// once: a decode step's launches stay identical, for graphs).
func (b *Backend) descFor(D *[qbWords]uint64) (uintptr, error) {
	if p, ok := b.fz.descs[*D]; ok {
		return p, nil
	}
	if b.fz.descs == nil {
		b.fz.descs = map[[qbWords]uint64]uintptr{}
	}
	p, err := b.alloc(qbWords * 8)
	if err != nil {
		return 0, err
	}
	if err := b.d.htod(p, unsafe.Pointer(&D[0]), qbWords*8); err != nil {
		return 0, err
	}
	b.fz.descs[*D] = p
	return p, nil
}

// rmsnormLaunch (worker only) launches the RMSNorm kernel.
func (b *Backend) rmsnormLaunch(d, x *Tensor, wp uintptr, glen int, eps float32) error {
	threads := min(256, cdiv(glen, 32)*32)
	f := b.fn["rmsnorm"]
	if glen%4 == 0 && glen <= 16*1024 {
		// one read of x, values in registers: 4 float4 per thread
		f, threads = b.fn["rmsnorm4"], min(1024, max(32, cdiv(glen/4, 4*32)*32))
	}
	return b.d.launch(f, grid1(x.rows*x.cols/glen), [3]int{threads, 1, 1}, 0, d.p, x.p, wp, glen, eps)
}
