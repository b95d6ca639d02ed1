package cuda

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/fmoe/fmoe/runtime"
)

// ErrShape reports operands whose shapes do not fit the operation.
var ErrShape = errors.New("cuda: shape mismatch")

// ErrForeign reports a Tensor, Weight or state made by another backend.
var ErrForeign = errors.New("cuda: value not created by this backend")

// ErrClosed reports use of a closed backend.
var ErrClosed = errors.New("cuda: backend closed")

// Options configure NewBackend.
type Options struct {
	Device int // GPU ordinal
	// CacheBytes is the GPU expert cache budget in bytes; 0 takes what fits
	// (free memory at the first MoE call, less a reserve).
	CacheBytes int64
	// KernelCacheDir holds compiled kernels; "" = os.UserCacheDir()/fmoe/cuda, "-" = none.
	KernelCacheDir string
	// CacheExperts, when > 0, caps the cache at this many experts (tests,
	// benchmarks of a capped cache).
	CacheExperts int
	// NoLayerFill disables loading a whole layer's experts on first use while
	// the cache has room for all of them (then layers never sync for routing).
	NoLayerFill bool
	// HostCacheBytes, when > 0, keeps up to this many bytes of experts in a
	// pinned host-memory tier between the GPU cache and the ExpertSource.
	HostCacheBytes int64
	// LRUCache selects plain LRU replacement for the GPU expert cache instead
	// of the segmented frequency policy (also FMOE_CUDA_CACHE=lru).
	LRUCache bool
	// NoBatchedMoE selects the older expert kernels (down projection walking
	// the K experts per warp) instead of the batched ones.
	NoBatchedMoE bool
	// NoFusion turns off the deferred decode fusions of fuse.go (also
	// FMOE_CUDA_FUSE=0).
	NoFusion bool
	// NoGraphs turns off the replay of repeated launch sequences (decode
	// steps) as CUDA graphs (also FMOE_CUDA_GRAPHS=0).
	NoGraphs bool
	// Profile times every kernel with GPU events (also FMOE_CUDA_PROFILE=1);
	// Profile() returns the table and Close prints it to stderr. It turns
	// graphs off.
	Profile bool
	// MaskDequant builds the decode matvecs with the masked-subnormal
	// dequantization (one LOP3 per code, kernels_fast.cu; also
	// FMOE_CUDA_DQ=1) instead of the three-instruction form. Off by default:
	// fewer instructions, within tolerance, but no faster whole-model decode
	// on an H200 (docs/benchmarks.md, CUDA round 4).
	MaskDequant bool
	// NoPDL launches kernels without programmatic dependent launch (also
	// FMOE_CUDA_PDL=0). With it (compute capability 9.0 and later) the
	// launches captured into CUDA graphs (decode steps) may start while the
	// previous kernel drains: every kernel waits (griddepcontrol.wait) before
	// it reads what earlier kernels wrote, and the persistent decode matvec
	// loads its first weights before that wait.
	NoPDL bool
}

// Backend runs the runtime's operations on one NVIDIA GPU.
type Backend struct {
	d      *device
	opts   Options
	mod    uintptr
	fn     map[string]uintptr
	allocs map[uintptr]int  // device allocations owned by the backend
	hosts  []unsafe.Pointer // pinned host allocations
	scr    map[string]*scratch
	moe    *expertCache
	fz     fuser          // pending decode work (fuse.go)
	tail   *moeTail       // a split MoE's deferred missing experts (moe.go)
	amOut  unsafe.Pointer // pinned: Argmax's result (argmax_f writes it)
	closed bool
	err    error // deferred error from Reset (no error return there)
	// override replaces routed expert ids (benchmarks; runtime.RouteOverrider).
	override func(layer, tokens, topK int, ids []int32)
}

type scratch struct {
	p    uintptr
	size int
}

// Info describes the GPU a backend runs on.
type Info struct {
	Name           string
	ComputeMajor   int
	ComputeMinor   int
	Multiprocessor int
}

// NewBackend opens GPU opts.Device, compiles (or loads cached) kernels and
// returns a backend. Without CUDA it returns an error wrapping ErrNoCUDA.
func NewBackend(opts Options) (runtime.Backend, error) { return Open(opts) }

// Open is NewBackend returning the concrete type (Stats, Info, Bench*).
func Open(opts Options) (*Backend, error) {
	d, err := openDevice(opts.Device)
	if err != nil {
		return nil, err
	}
	b := &Backend{d: d, opts: opts, allocs: map[uintptr]int{}, scr: map[string]*scratch{}}
	err = d.do(func() error {
		d.sm90a = d.canSM90A() && wantSM90A()
		bin, err := d.cubin(kernelSourceDQ(opts.MaskDequant || os.Getenv("FMOE_CUDA_DQ") == "1"), opts.KernelCacheDir)
		if err != nil {
			return err
		}
		if b.mod, b.fn, err = d.loadModule(bin, kernelNames()); err != nil {
			return err
		}
		if d.stream, err = d.streamCreateFlags(0); err != nil {
			return err
		}
		d.pdl = d.ccMajor >= 9 && !opts.NoPDL && os.Getenv("FMOE_CUDA_PDL") != "0"
		if os.Getenv("FMOE_CUDA_DELTA2") == "0" {
			disableDelta2 = true // benchmarks: the shared-memory delta kernel
		}
		if os.Getenv("FMOE_CUDA_DELTA_COLS") == "0" {
			disableDeltaCols = true // benchmarks: prompt steps on delta_rule2
		}
		d.names = make(map[uintptr]string, len(b.fn))
		for n, f := range b.fn {
			d.names[f] = n
		}
		if traceOn() {
			if err := b.startTrace(); err != nil {
				return err
			}
		}
		if probeOn() {
			if err := b.startProbe(); err != nil {
				return err
			}
		}
		if pv := os.Getenv("FMOE_CUDA_PROFILE"); opts.Profile || pv == "1" || pv == "grid" {
			d.prof = newProfiler(d.names)
			d.prof.byGrid = pv == "grid"
		} else if !opts.NoGraphs && os.Getenv("FMOE_CUDA_GRAPHS") != "0" {
			d.graphs = &grapher{match: true}
		}
		return nil
	})
	if err != nil {
		d.close()
		return nil, err
	}
	return b, nil
}

func kernelNames() []string {
	names := []string{"argmax_f", "fmm", "embedf", "rmsnorm", "rmsnorm4", "add_f", "swiglu_f", "sigmoid_gate_add", "sigmoid_gate_add2",
		"attn_prep", "attn_split", "attn_combine", "delta_conv", "delta_rule", "router_topk",
		"delta_conv_t", "delta_qkg", "delta_gnorm", "delta_cols_4", "delta_cols_8", "delta_cols_16", "delta_cols_32"}
	for _, r := range []string{"1", "2", "4", "8", "16", "32"} {
		names = append(names, "delta_rule2_"+r)
	}
	for _, bits := range []string{"2", "4", "8"} {
		names = append(names, "embedq"+bits)
		for _, v := range []string{"_1v", "_8v", "_1s", "_8s"} {
			names = append(names, "qmm"+bits+v)
		}
		for _, v := range []string{"v", "s", "f"} {
			names = append(names, "moe_gu"+bits+v, "moe_dn"+bits+v)
		}
		names = append(names, "moe_gu"+bits+"k")
		for _, v := range qmvVariants {
			names = append(names, "qmv"+bits+"_"+v)
		}
		for _, v := range []string{"1", "2", "4"} {
			names = append(names, "qgemm"+bits+"_"+v)
		}
	}
	names = append(names, "qgemm_sum", "moe_combine", "qmvb2", "qmvb4", "qmvb8", "qmvb2o", "qmvb4o", "qmvb8o", "moe_dnc2", "moe_dnc4", "moe_dnc8", "qmma4", "qmma4m2", "qmmae4_1", "qmmad4_1", "qmmae4_2", "qmmad4_2", "qmmae4_4", "qmmad4_4", "qmmae4m2_1", "qmmad4m2_1", "qmmae4m2_2", "qmmad4m2_2", "qmmae4m2_4", "qmmad4m2_4", "moe_slots", "qmma4m2p2", "qmmae4m2p2_1", "qmmad4m2p2_1", "qmmae4m2p2_2", "qmmad4m2p2_2", "qmmae4m2p2_4", "qmmad4m2p2_4", "qmmw4", "qmmwe4", "qmmwd4", "step_probe", "barrier_probe")
	return append(names, qmxKernelNames()...)
}

// Info returns the device's name and compute capability.
func (b *Backend) Info() Info {
	return Info{Name: b.d.name, ComputeMajor: b.d.ccMajor, ComputeMinor: b.d.ccMinor, Multiprocessor: b.d.sms}
}

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "cuda" }

// Close frees every allocation and releases the context.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	if b.d.prof != nil {
		if st, err := b.Profile(); err == nil {
			WriteProfile(os.Stderr, st)
		}
	}
	if b.d.probe != 0 {
		if err := b.writeProbe(os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if b.d.trace != nil {
		if st, n, err := b.Trace(); err == nil {
			WriteTrace(os.Stderr, st, n)
		} else {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	b.closed = true
	var errs []error
	errs = append(errs, b.d.do(func() error {
		var errs []error
		if g := b.d.graphs; g != nil {
			errs = append(errs, g.barrier(b.d), g.drop(b.d))
			b.d.graphs = nil
		}
		if b.moe != nil {
			errs = append(errs, b.dropCache())
		}
		for p := range b.allocs {
			errs = append(errs, b.d.free(p))
		}
		for _, p := range b.hosts {
			errs = append(errs, b.d.hostFree(p))
		}
		if b.mod != 0 {
			errs = append(errs, check(call(b.d.l.drv.cuModuleUnload, b.mod), "cuModuleUnload"))
		}
		if b.d.stream != 0 {
			errs = append(errs, b.d.streamDestroy(b.d.stream))
		}
		return errors.Join(errs...)
	}))
	errs = append(errs, b.d.close())
	return errors.Join(errs...)
}

// run executes f on the worker after launching pending fused work (fuse.go),
// first reporting a deferred error.
func (b *Backend) run(f func() error) error {
	return b.runRaw(func() error {
		if err := b.flush(); err != nil {
			return err
		}
		return f()
	})
}

// runRaw is run without the flush (fusing entry points decide themselves).
func (b *Backend) runRaw(f func() error) error {
	if b.closed {
		return ErrClosed
	}
	if err := b.err; err != nil {
		b.err = nil
		return err
	}
	return b.d.do(f)
}

// alloc (worker only) allocates zeroed device memory owned by the backend.
func (b *Backend) alloc(n int) (uintptr, error) {
	n = max(n, 16)
	p, err := b.d.malloc(n)
	if err != nil {
		return 0, err
	}
	if err := b.d.memset(p, n); err != nil {
		b.d.free(p)
		return 0, err
	}
	b.allocs[p] = n
	return p, nil
}

func (b *Backend) release(p uintptr) error {
	if _, ok := b.allocs[p]; !ok {
		return nil
	}
	delete(b.allocs, p)
	return b.d.free(p)
}

// scratchBuf (worker only) returns a grow-only device buffer of at least n bytes.
func (b *Backend) scratchBuf(name string, n int) (uintptr, error) {
	s := b.scr[name]
	if s != nil && s.size >= n {
		return s.p, nil
	}
	if s != nil {
		if err := b.d.sync(); err != nil {
			return 0, err
		}
		if err := b.release(s.p); err != nil {
			return 0, err
		}
	}
	size := max(n, 256)
	if s != nil {
		size = max(size, 2*s.size)
	}
	p, err := b.alloc(size)
	if err != nil {
		return 0, err
	}
	b.scr[name] = &scratch{p: p, size: size}
	return p, nil
}

// Tensor is a device float32 matrix.
type Tensor struct {
	p          uintptr
	rows, cols int
}

func (t *Tensor) Rows() int  { return t.rows }
func (t *Tensor) Cols() int  { return t.cols }
func (t *Tensor) bytes() int { return t.rows * t.cols * 4 }

// NewTensor implements runtime.Backend.
func (b *Backend) NewTensor(rows, cols int) (runtime.Tensor, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("%w: tensor %dx%d", ErrShape, rows, cols)
	}
	t := &Tensor{rows: rows, cols: cols}
	err := b.run(func() (err error) { t.p, err = b.alloc(t.bytes()); return err })
	if err != nil {
		return nil, err
	}
	return t, nil
}

func tensors(ts ...runtime.Tensor) ([]*Tensor, error) {
	out := make([]*Tensor, len(ts))
	for i, t := range ts {
		ct, ok := t.(*Tensor)
		if !ok || ct == nil {
			return nil, fmt.Errorf("%w: tensor %T", ErrForeign, t)
		}
		out[i] = ct
	}
	return out, nil
}

// Upload implements runtime.Backend.
func (b *Backend) Upload(t runtime.Tensor, src []float32) error {
	ts, err := tensors(t)
	if err != nil {
		return err
	}
	if len(src) != ts[0].rows*ts[0].cols {
		return fmt.Errorf("%w: upload %d values into %dx%d", ErrShape, len(src), ts[0].rows, ts[0].cols)
	}
	return b.run(func() error { return b.d.htod(ts[0].p, unsafe.Pointer(&src[0]), len(src)*4) })
}

// Download implements runtime.Backend; it waits for pending work.
func (b *Backend) Download(t runtime.Tensor, dst []float32) error {
	ts, err := tensors(t)
	if err != nil {
		return err
	}
	if len(dst) != ts[0].rows*ts[0].cols {
		return fmt.Errorf("%w: download %dx%d into %d values", ErrShape, ts[0].rows, ts[0].cols, len(dst))
	}
	return b.run(func() error { return b.d.dtoh(unsafe.Pointer(&dst[0]), ts[0].p, len(dst)*4) })
}

// Weight is a device-resident weight.
type Weight struct {
	name    string
	out, in int
	bits    int
	group   int
	w, s, z uintptr // quantized words, scales, biases
	dense   uintptr // float32 values (dense weights and quantized vectors)
}

func (w *Weight) Out() int { return w.out }
func (w *Weight) In() int  { return w.in }
func (w *Weight) n() int   { return w.out * w.in }

// LoadWeight implements runtime.Backend. Quantized vectors (Out == 1) are
// also kept dequantized, since norms and gates read them elementwise.
func (b *Backend) LoadWeight(wd *runtime.WeightData) (runtime.Weight, error) {
	w := &Weight{name: wd.Name, out: wd.Out, in: wd.In}
	var dense []float32
	switch {
	case wd.Q != nil:
		q := wd.Q
		if err := q.Validate(); err != nil {
			return nil, fmt.Errorf("cuda: weight %s: %w", wd.Name, err)
		}
		if q.Rows != wd.Out || q.Cols != wd.In {
			return nil, fmt.Errorf("%w: weight %s is %dx%d, quantized matrix %dx%d", ErrShape, wd.Name, wd.Out, wd.In, q.Rows, q.Cols)
		}
		w.bits, w.group = q.Bits, q.GroupSize
		if wd.Out == 1 {
			dense = make([]float32, q.Cols)
			q.DequantizeRow(dense, 0)
		}
	case len(wd.F) == wd.Out*wd.In && len(wd.F) > 0:
		dense = wd.F
	default:
		return nil, fmt.Errorf("%w: weight %s has neither quantized data nor %d floats", ErrShape, wd.Name, wd.Out*wd.In)
	}
	err := b.run(func() error {
		if q := wd.Q; q != nil {
			var err error
			for _, part := range []struct {
				dst *uintptr
				src unsafe.Pointer
				n   int
			}{
				{&w.w, unsafe.Pointer(&q.W[0]), len(q.W) * 4},
				{&w.s, unsafe.Pointer(&q.Scales[0]), len(q.Scales) * 2},
				{&w.z, unsafe.Pointer(&q.Biases[0]), len(q.Biases) * 2},
			} {
				if *part.dst, err = b.alloc(part.n); err != nil {
					return err
				}
				if err = b.d.htod(*part.dst, part.src, part.n); err != nil {
					return err
				}
			}
		}
		if dense != nil {
			var err error
			if w.dense, err = b.alloc(len(dense) * 4); err != nil {
				return err
			}
			return b.d.htod(w.dense, unsafe.Pointer(&dense[0]), len(dense)*4)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: load weight %s: %w", wd.Name, err)
	}
	return w, nil
}

func weights(ws ...runtime.Weight) ([]*Weight, error) {
	out := make([]*Weight, len(ws))
	for i, w := range ws {
		cw, ok := w.(*Weight)
		if !ok || cw == nil {
			return nil, fmt.Errorf("%w: weight %T", ErrForeign, w)
		}
		out[i] = cw
	}
	return out, nil
}

// vector returns the dense values of a weight used elementwise.
func vector(w *Weight, n int) (uintptr, error) {
	if w.dense == 0 {
		return 0, fmt.Errorf("%w: weight %s is a quantized matrix, not a vector", ErrShape, w.name)
	}
	if n >= 0 && w.n() != n {
		return 0, fmt.Errorf("%w: weight %s has %d values, want %d", ErrShape, w.name, w.n(), n)
	}
	return w.dense, nil
}

// vecOK reports whether a quantized row can be read in 128-bit chunks of
// four words lying inside one group.
func vecOK(bits, group, in int, offsets ...int64) bool {
	per := 32 / bits
	if (in/per)%4 != 0 || group%(4*per) != 0 {
		return false
	}
	for _, o := range offsets {
		if o%16 != 0 {
			return false
		}
	}
	return true
}
