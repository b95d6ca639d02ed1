package cuda

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/fmoe/fmoe/runtime"
)

const ewBlock = 256

func cdiv(a, b int) int { return (a + b - 1) / b }

func grid1(n int) [3]int { return [3]int{n, 1, 1} }

// ewGrid sizes a grid-stride elementwise launch.
func ewGrid(n int) [3]int { return grid1(max(1, min(cdiv(n, ewBlock), 4096))) }

var blk = [3]int{ewBlock, 1, 1}

// Embed implements runtime.Backend.
func (b *Backend) Embed(dst runtime.Tensor, table runtime.Weight, ids []int32) error {
	ts, err := tensors(dst)
	if err != nil {
		return err
	}
	ws, err := weights(table)
	if err != nil {
		return err
	}
	d, w := ts[0], ws[0]
	if d.rows != len(ids) || d.cols != w.in {
		return fmt.Errorf("%w: embed %d ids of width %d into %dx%d", ErrShape, len(ids), w.in, d.rows, d.cols)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= w.out {
			return fmt.Errorf("%w: token id %d outside table of %d rows", ErrShape, id, w.out)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return b.run(func() error {
		idp, err := b.scratchBuf("ids", len(ids)*4)
		if err != nil {
			return err
		}
		if err := b.d.htod(idp, unsafe.Pointer(&ids[0]), len(ids)*4); err != nil {
			return err
		}
		if w.w != 0 {
			return b.d.launch(b.fn[fmt.Sprintf("embedq%d", w.bits)], grid1(len(ids)), blk, 0, w.w, w.s, w.z, idp, d.p, w.in, w.group)
		}
		return b.d.launch(b.fn["embedf"], grid1(len(ids)), blk, 0, w.dense, idp, d.p, w.in)
	})
}

// MatMul implements runtime.Backend.
func (b *Backend) MatMul(dst runtime.Tensor, wt runtime.Weight, x runtime.Tensor) error {
	ts, err := tensors(dst, x)
	if err != nil {
		return err
	}
	ws, err := weights(wt)
	if err != nil {
		return err
	}
	d, xt, w := ts[0], ts[1], ws[0]
	if xt.cols != w.in || d.cols != w.out || d.rows != xt.rows {
		return fmt.Errorf("%w: matmul %s [%d,%d] · x[%d,%d] → [%d,%d]", ErrShape, w.name, w.out, w.in, xt.rows, xt.cols, d.rows, d.cols)
	}
	return b.runRaw(func() error { return b.matmulOp(d, w, xt) })
}

// matmulOp (worker only) is MatMul on checked operands.
func (b *Backend) matmulOp(d *Tensor, w *Weight, xt *Tensor) error {
	if ok, err := b.fuseMatMul(d, w, xt); ok {
		return err
	}
	if err := b.flush(); err != nil {
		return err
	}
	return b.matmul(d.p, w, xt.p, xt.rows)
}

// qmvVariants are the decode matvec kernels: rRuU = one warp per R rows, U
// 128-bit chunks per lane per iteration; kR = one block of 4 warps per R rows,
// the warps splitting the columns. QMVVariant picks one (benchmarks compare
// them).
var qmvVariants = []string{"k8", "k4", "r4u2", "r2u4", "r8u1", "r4u1"}

// QMVVariant is the decode matvec kernel MatMul uses for T = 1 ("" = the
// previous generic kernel). r8u1 was fastest of the rRuU variants on an H200
// (16384×4096 4-bit: 20.0 µs against r4u1 23.2, r4u2 35.5, r2u4 42.1 and the
// generic kernel 30.8); k8 runs four times the blocks, which small matrices
// (the shared expert, router, b/a projections) need to fill the GPU. Rows of
// fewer than 64 chunks take r8u1 (a k-split would leave warps idle).
var QMVVariant = "k8"

// qmvKernel returns the decode matvec kernel name and rows per block.
func qmvKernel(bits, in int) (string, int) {
	v := QMVVariant
	if v[0] == 'k' && in/(4*32/bits) < 64 {
		v = "r8u1"
	}
	rows := int(v[1] - '0')
	if v[0] == 'r' {
		rows *= 4
	}
	return fmt.Sprintf("qmv%d_%s", bits, v), rows
}

// GemmMinTokens is the batch size from which MatMul uses the tiled GEMM
// (below it, the register-blocked multi-token kernel: at T=8 it took 303 µs
// against the GEMM's 363 on an H200; at T=64, 2148 against 687).
var GemmMinTokens = 12

// matmul (worker only): y[T, out] = W · x[T, in].
func (b *Backend) matmul(y uintptr, w *Weight, x uintptr, T int) error {
	if w.w == 0 {
		return b.d.launch(b.fn["fmm"], [3]int{cdiv(w.out, 4), T, 1}, [3]int{128, 1, 1}, 0, w.dense, x, y, w.out, w.in, T)
	}
	vec := vecOK(w.bits, w.group, w.in)
	if T == 1 && vec && QMVVariant != "" {
		name, rows := qmvKernel(w.bits, w.in)
		return b.d.launch(b.fn[name], [3]int{cdiv(w.out, rows), 1, 1}, [3]int{128, 1, 1}, 0,
			w.w, w.s, w.z, x, y, w.out, w.in, w.group)
	}
	if T >= GemmMinTokens && T > 1 && b.qmmaOK(w, x) {
		return b.qmma(y, w, x, T)
	}
	if T >= GemmMinTokens && T > 1 && w.in%32 == 0 {
		return b.gemm(y, w, x, T)
	}
	r, tt, variant := 4, 1, "_1"
	if T > 1 {
		r, tt, variant = 2, 8, "_8"
	}
	if vecOK(w.bits, w.group, w.in) {
		variant += "v"
	} else {
		variant += "s"
	}
	f := b.fn[fmt.Sprintf("qmm%d%s", w.bits, variant)]
	return b.d.launch(f, [3]int{cdiv(w.out, 4*r), cdiv(T, tt), 1}, [3]int{128, 1, 1}, 0,
		w.w, w.s, w.z, x, y, w.out, w.in, T, w.group)
}

// QMMA lets prefill MatMuls of 4-bit weights in groups of 64 run on the
// tensor cores (kernels_mma.cu qmma4: exact bf16 codes, x in three bf16
// parts) on sm_80 and later; FMOE_CUDA_QMMA=0 or 1 overrides it.
var QMMA = true

func (b *Backend) qmmaOn() bool {
	if v, ok := os.LookupEnv("FMOE_CUDA_QMMA"); ok {
		return v != "0"
	}
	return QMMA
}

func (b *Backend) qmmaOK(w *Weight, x uintptr) bool {
	return b.qmmaOn() && b.d.ccMajor >= 8 && w.bits == 4 && w.group == 64 && w.in%128 == 0 && x%16 == 0 && w.w%8 == 0
}

// QMMASplitK lets qmma split the columns over up to 2·SMs / tiles blocks
// (at least 2 chunks of 128 columns each) when its tiles alone would not
// fill the GPU twice; FMOE_CUDA_QMMA_SPLIT=0 or 1 overrides it.
var QMMASplitK = true

// qmma (worker only): the tensor-core prefill GEMM, split over the columns
// into partial sums added by qgemm_sum when the tiles are few.
func (b *Backend) qmma(y uintptr, w *Weight, x uintptr, T int) error {
	if b.qmmwOn() {
		return b.qmmw(y, w, x, T)
	}
	name, rows := "qmma4", 64
	if qmmaMT() == 2 {
		name, rows = "qmma4m2"+qmmaPartsSuffix(), 128
	}
	return b.splitGEMM(b.fn[name], cdiv(w.out, rows), cdiv(T, 32), 128, 128, 2, y, w, x, T)
}

// splitGEMM (worker only) launches the prefill GEMM kernel f (arguments W,
// S, B, x, y, out, in, T, kc, then post) on gx × gy blocks of threads, its
// columns split over blockIdx.z into slices of kc columns (whole chunks of
// chunk columns, at least minChunks a slice) when the tiles alone would not
// fill the GPU twice and QMMASplitK (FMOE_CUDA_QMMA_SPLIT) allows; the
// slices' partial sums go to scratch and qgemm_sum adds them into y.
func (b *Backend) splitGEMM(f uintptr, gx, gy, threads, chunk, minChunks int, y uintptr, w *Weight, x uintptr, T int, post ...karg) error {
	chunks := w.in / chunk
	splits := 1
	on := QMMASplitK
	if v, ok := os.LookupEnv("FMOE_CUDA_QMMA_SPLIT"); ok {
		on = v != "0"
	}
	if on {
		splits = max(1, min(cdiv(2*b.d.sms, gx*gy), chunks/minChunks))
	}
	kc := cdiv(chunks, splits) * chunk
	splits = cdiv(w.in, kc)
	dst := y
	if splits > 1 {
		part, err := b.scratchBuf("gemm_part", splits*T*w.out*4)
		if err != nil {
			return err
		}
		dst = part
	}
	args := append([]karg{w.w, w.s, w.z, x, dst, w.out, w.in, T, kc}, post...)
	if err := b.d.launch(f, [3]int{gx, gy, splits}, [3]int{threads, 1, 1}, 0, args...); err != nil || splits == 1 {
		return err
	}
	n := T * w.out
	return b.d.launch(b.fn["qgemm_sum"], ewGrid(n), blk, 0, dst, y, int64(n), splits)
}

// QMMAWG lets the dense prefill GEMMs and the grouped prefill experts (slots
// of 32 pairs) run on the warpgroup MMA (qmmw4, qmmwe4, qmmwd4,
// kernels_wg.cu: the arithmetic of qmma4m2p2, x in two bf16 parts) where the
// kernels are built for sm_90a (Hopper with NVRTC 12 or later);
// FMOE_CUDA_QMMA_WG=0 or 1 overrides it.
var QMMAWG = false

// qmmwWanted is QMMAWG as FMOE_CUDA_QMMA_WG overrides it.
func qmmwWanted() bool {
	if v, ok := os.LookupEnv("FMOE_CUDA_QMMA_WG"); ok {
		return v != "0"
	}
	return QMMAWG
}

// qmmwOn reports whether qmma runs qmmw4: wanted, and compiled in.
func (b *Backend) qmmwOn() bool { return qmmwWanted() && b.d.wgmma() }

// qmmw (worker only): qmma on the warpgroup MMA, 128 rows × 64 tokens a
// block, split over the columns (64 a chunk) into partial sums added by
// qgemm_sum when the tiles alone would not fill the GPU twice.
func (b *Backend) qmmw(y uintptr, w *Weight, x uintptr, T int) error {
	lbo, sbo := qmmwOffsets()
	return b.splitGEMM(b.fn["qmmw4"], cdiv(T, 64), cdiv(w.out, 128), 256, 64, 4, y, w, x, T, lbo, sbo)
}

// qmmwLBO and qmmwSBO are the byte offsets of qmmw4's shared-memory matrix
// descriptors (kernels_wg.cu): between the two k halves of a step's core
// matrices, and between groups of 8 tokens.
const qmmwLBO, qmmwSBO = 128, 256

// qmmwOffsets returns qmmwLBO and qmmwSBO, exchanged with
// FMOE_CUDA_QMMW_SWAP=1 (a diagnostic for the descriptor's layout).
func qmmwOffsets() (int, int) {
	if os.Getenv("FMOE_CUDA_QMMW_SWAP") == "1" {
		return qmmwSBO, qmmwLBO
	}
	return qmmwLBO, qmmwSBO
}

// QMMAMT is the number of 16-row MMA tiles per warp of the dense prefill
// GEMM: 1 (qmma4) or 2 (qmma4m2, 128 rows per block); FMOE_CUDA_QMMA_MT
// overrides it. Default 2: on an H200, 16384×4096 (BenchmarkQMatVec, round
// 10 in docs/benchmarks.md) T=8 / 32 / 64 took 72 / 75 / 141 µs against
// qmma4's 92 / 97 / 181.
var QMMAMT = 2

// QMMAParts is the number of bf16 parts x is split into by the prefill
// GEMMs of two row tiles per warp (qmma4m2, qmmae4m2, qmmad4m2): 3 (x to
// 24 significant bits, every product exact, the result within float32
// rounding of the CUDA-core kernels) or 2 (x to 16 significant bits, a
// relative error of at most 2⁻¹⁷ per value, a third fewer MMAs);
// FMOE_CUDA_QMMA_PARTS overrides it. Default 2: on an H200 (397B shapes,
// resident, 128-token prefill, docs/benchmarks.md round 12) K=4 1516-1530 →
// 1683-1777 tok/s, K=10 1108-1112 → 1289-1299.
var QMMAParts = 2

// qmmaPartsSuffix is the kernel name suffix of QMMAParts: "" or "p2".
func qmmaPartsSuffix() string {
	p := QMMAParts
	if v := os.Getenv("FMOE_CUDA_QMMA_PARTS"); v == "2" || v == "3" {
		p = int(v[0] - '0')
	}
	if p == 2 {
		return "p2"
	}
	return ""
}

func qmmaMT() int {
	if v := os.Getenv("FMOE_CUDA_QMMA_MT"); v == "1" || v == "2" {
		return int(v[0] - '0')
	}
	return QMMAMT
}

// gemm (worker only): the tiled prefill kernel, split over the columns when
// the tiles alone would not fill the GPU.
func (b *Backend) gemm(y uintptr, w *Weight, x uintptr, T int) error {
	tn := 4
	switch {
	case T <= 8:
		tn = 1
	case T <= 16:
		tn = 2
	}
	gx, gy := cdiv(w.out, 64), cdiv(T, 8*tn)
	tiles := w.in / 32
	splits := max(1, min((2*b.d.sms)/(gx*gy), tiles/4))
	kchunk := cdiv(tiles, splits) * 32
	splits = cdiv(w.in, kchunk)
	f := b.fn[fmt.Sprintf("qgemm%d_%d", w.bits, tn)]
	if splits == 1 {
		return b.d.launch(f, [3]int{gx, gy, 1}, [3]int{128, 1, 1}, 0, w.w, w.s, w.z, x, y, w.out, w.in, T, w.group, kchunk)
	}
	n := T * w.out
	part, err := b.scratchBuf("gemm_part", splits*n*4)
	if err != nil {
		return err
	}
	if err := b.d.launch(f, [3]int{gx, gy, splits}, [3]int{128, 1, 1}, 0, w.w, w.s, w.z, x, part, w.out, w.in, T, w.group, kchunk); err != nil {
		return err
	}
	return b.d.launch(b.fn["qgemm_sum"], ewGrid(n), blk, 0, part, y, int64(n), splits)
}

// RMSNorm implements runtime.Backend.
func (b *Backend) RMSNorm(dst, x runtime.Tensor, wt runtime.Weight, eps float32) error {
	ts, err := tensors(dst, x)
	if err != nil {
		return err
	}
	ws, err := weights(wt)
	if err != nil {
		return err
	}
	d, xt, w := ts[0], ts[1], ws[0]
	glen := w.n()
	if d.rows != xt.rows || d.cols != xt.cols || glen == 0 || xt.cols%glen != 0 {
		return fmt.Errorf("%w: rmsnorm of [%d,%d] in groups of %d into [%d,%d]", ErrShape, xt.rows, xt.cols, glen, d.rows, d.cols)
	}
	wp, err := vector(w, -1)
	if err != nil {
		return err
	}
	return b.runRaw(func() error {
		if ok, err := b.fuseRMSNorm(d, xt, wp, glen, eps); ok {
			return err
		}
		if err := b.flush(); err != nil {
			return err
		}
		return b.rmsnormLaunch(d, xt, wp, glen, eps)
	})
}

func sameShape(op string, ts ...*Tensor) error {
	for _, t := range ts[1:] {
		if t.rows != ts[0].rows || t.cols != ts[0].cols {
			return fmt.Errorf("%w: %s of [%d,%d] and [%d,%d]", ErrShape, op, ts[0].rows, ts[0].cols, t.rows, t.cols)
		}
	}
	return nil
}

// Add implements runtime.Backend.
func (b *Backend) Add(dst, x runtime.Tensor) error {
	ts, err := tensors(dst, x)
	if err != nil {
		return err
	}
	if err := sameShape("add", ts...); err != nil {
		return err
	}
	n := ts[0].rows * ts[0].cols
	return b.runRaw(func() error { return b.addOp(ts[0], ts[1], n) })
}

// addOp (worker only) is Add on checked operands of n values.
func (b *Backend) addOp(d, x *Tensor, n int) error {
	if ok, err := b.fuseAdd(d, x); ok || err != nil {
		return err
	}
	if err := b.flush(); err != nil {
		return err
	}
	return b.d.launch(b.fn["add_f"], ewGrid(n), blk, 0, d.p, x.p, int64(n))
}

// SwiGLU implements runtime.Backend.
func (b *Backend) SwiGLU(dst, gate, up runtime.Tensor) error {
	ts, err := tensors(dst, gate, up)
	if err != nil {
		return err
	}
	if err := sameShape("swiglu", ts...); err != nil {
		return err
	}
	n := ts[0].rows * ts[0].cols
	return b.runRaw(func() error { return b.swigluOp(ts[0], ts[1], ts[2], n) })
}

// swigluOp (worker only) is SwiGLU on checked operands of n values.
func (b *Backend) swigluOp(d, g, u *Tensor, n int) error {
	if ok, err := b.fuseSwiGLU(d, g, u); ok || err != nil {
		return err
	}
	if err := b.flush(); err != nil {
		return err
	}
	return b.d.launch(b.fn["swiglu_f"], ewGrid(n), blk, 0, d.p, g.p, u.p, int64(n))
}

// SigmoidGateAdd implements runtime.Backend.
func (b *Backend) SigmoidGateAdd(dst, x, gate runtime.Tensor) error {
	ts, err := tensors(dst, x, gate)
	if err != nil {
		return err
	}
	if err := sameShape("sigmoid gate add", ts[0], ts[1]); err != nil {
		return err
	}
	if ts[2].rows != ts[0].rows || ts[2].cols != 1 {
		return fmt.Errorf("%w: gate [%d,%d] for [%d,%d]", ErrShape, ts[2].rows, ts[2].cols, ts[0].rows, ts[0].cols)
	}
	return b.runRaw(func() error { return b.gateAddOp(ts[0], ts[1], ts[2]) })
}

// gateAddOp (worker only) is SigmoidGateAdd on checked operands.
func (b *Backend) gateAddOp(d, x, gate *Tensor) error {
	if ok, err := b.fuseGateAdd(d, x, gate); ok || err != nil {
		return err
	}
	if err := b.flush(); err != nil {
		return err
	}
	n := d.rows * d.cols
	return b.d.launch(b.fn["sigmoid_gate_add2"], ewGrid(n), blk, 0, d.p, x.p, gate.p, d.cols, int64(n))
}

// amBlocks is argmax_f's grid: enough blocks to stream a vocabulary-sized
// row at HBM speed, few enough for one block to reduce their results.
const amBlocks = 256

// PrefillBatch is the prompt tokens per forward step the CUDA backend asks
// for (runtime.PrefillBatcher) when the caller sets none: each step reads
// every dense weight and every routed expert once, and on an H200 (397B
// shapes, 32 experts per layer, 128-token prompt) 128-token steps prefill
// 1057-1104 tok/s at K=4 against 816-830 with 32 (docs/benchmarks.md,
// round 9).
var PrefillBatch = 128

// PrefillBatch implements runtime.PrefillBatcher.
func (b *Backend) PrefillBatch() int { return PrefillBatch }

// Argmax implements runtime.Argmaxer: argmax_f reduces row 0 of t on the GPU
// and writes the index into pinned host memory, so a greedy decoding step
// waits for the stream and reads 4 bytes instead of downloading the logits.
// FMOE_CUDA_ARGMAX=0 downloads the row and scans it on the host instead (the
// path of backends without Argmax; for A/B timing).
func (b *Backend) Argmax(t runtime.Tensor, n int) (int, error) {
	ts, err := tensors(t)
	if err != nil {
		return 0, err
	}
	x := ts[0]
	if n < 1 || n > x.cols {
		return 0, fmt.Errorf("%w: argmax over %d of a row of %d values", ErrShape, n, x.cols)
	}
	if os.Getenv("FMOE_CUDA_ARGMAX") == "0" {
		v := make([]float32, x.rows*x.cols)
		if err := b.Download(x, v); err != nil {
			return 0, err
		}
		return runtime.Argmax(v[:x.cols], n), nil
	}
	var idx int32
	err = b.run(func() error {
		if b.amOut == nil {
			h, err := b.d.hostAlloc(4)
			if err != nil {
				return err
			}
			b.hosts = append(b.hosts, h)
			b.amOut = h
		}
		part, err := b.scratchBuf("argmax", amBlocks*8+8) // block results, then the arrival count
		if err != nil {
			return err
		}
		if err := b.d.launch(b.fn["argmax_f"], grid1(min(amBlocks, cdiv(n, 4*ewBlock))), blk, 0,
			x.p, n, part, part+amBlocks*8, uintptr(b.amOut)); err != nil {
			return err
		}
		if err := b.d.sync(); err != nil {
			return err
		}
		idx = *(*int32)(b.amOut)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if idx < 0 || int(idx) >= n {
		return 0, fmt.Errorf("cuda: argmax returned %d for %d values", idx, n)
	}
	return int(idx), nil
}
