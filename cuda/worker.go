package cuda

import (
	"bytes"
	"fmt"
	goruntime "runtime"
	"sync"
	"unsafe"
)

// Device attribute numbers (CUdevice_attribute).
const (
	attrMultiprocessorCount    = 16
	attrComputeCapabilityMajr  = 75
	attrComputeCapabilityMinr  = 76
	attrMaxSharedPerBlockOptin = 97
)

// device owns one GPU's primary context on a dedicated OS thread. Every
// driver call runs inside do, on that thread.
type device struct {
	l       *libs
	jobs    chan func()
	mu      sync.Mutex
	ordinal int
	dev     int32
	ctx     uintptr
	name    string
	ccMajor int
	probe   uintptr // FMOE_CUDA_PROBE's sums (trace.go); 0 off
	ccMinor int
	sms     int
	smemOpt int
	sm90a   bool // the kernels are built for sm_90a (nvrtc.go arch)

	slots  [32]uint64  // kernel argument values (launch)
	params [32]uintptr // pointers to slots

	// stream is the compute stream every kernel and async copy goes to: a
	// blocking stream (it orders with the legacy stream that the synchronous
	// copies use), so that a decode step can be captured into a CUDA graph.
	stream uintptr
	prof   *profiler // per-kernel GPU-event timing (nil: off)
	trace  *tracer   // per-kernel GPU timer trace (nil: off)
	names  map[uintptr]string
	graphs *grapher // CUDA graph capture and replay of repeated launch sequences (nil: off)

	occ map[[3]uintptr]int // blocks per SM by (function, threads, shared memory)

	pdl       bool // launch with programmatic stream serialization (cuLaunchKernelEx) ...
	capturing bool // ... while launches are captured into a graph
	lcfg      launchConfig
	lattr     launchAttr
}

// launchConfig is CUlaunchConfig (cuda.h).
type launchConfig struct {
	gridX, gridY, gridZ    uint32
	blockX, blockY, blockZ uint32
	smem                   uint32
	_                      uint32
	stream                 uintptr
	attrs                  uintptr // *launchAttr
	nattrs                 uint32
	_                      uint32
}

// launchAttr is CUlaunchAttribute: an id, padding, a 64-byte value union.
type launchAttr struct {
	id  uint32
	_   uint32
	val [64]byte
}

// attrProgrammaticStreamSerialization is CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION.
const attrProgrammaticStreamSerialization = 6

// openDevice loads the libraries, starts the worker and makes the primary
// context of GPU ordinal current on it.
func openDevice(ordinal int) (*device, error) {
	l, err := loadLibs()
	if err != nil {
		return nil, err
	}
	d := &device{l: l, jobs: make(chan func()), ordinal: ordinal}
	ready := make(chan error)
	go d.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return d, nil
}

func (d *device) loop(ready chan<- error) {
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	err := d.init()
	ready <- err
	if err != nil {
		return
	}
	for f := range d.jobs {
		f()
	}
}

func (d *device) init() error {
	dr := &d.l.drv
	if err := check(call(dr.cuInit, 0), "cuInit"); err != nil {
		return err
	}
	if err := check(call(dr.cuDeviceGet, uintptr(unsafe.Pointer(&d.dev)), uintptr(d.ordinal)), "cuDeviceGet"); err != nil {
		return err
	}
	if err := check(call(dr.cuDevicePrimaryCtxRetain, uintptr(unsafe.Pointer(&d.ctx)), uintptr(d.dev)), "cuDevicePrimaryCtxRetain"); err != nil {
		return err
	}
	if err := check(call(dr.cuCtxSetCurrent, d.ctx), "cuCtxSetCurrent"); err != nil {
		return err
	}
	var err error
	if d.ccMajor, err = d.attr(attrComputeCapabilityMajr); err != nil {
		return err
	}
	if d.ccMinor, err = d.attr(attrComputeCapabilityMinr); err != nil {
		return err
	}
	if d.sms, err = d.attr(attrMultiprocessorCount); err != nil {
		return err
	}
	if d.smemOpt, err = d.attr(attrMaxSharedPerBlockOptin); err != nil {
		return err
	}
	name := make([]byte, 256)
	if err := check(call(dr.cuDeviceGetName, uintptr(unsafe.Pointer(&name[0])), 256, uintptr(d.dev)), "cuDeviceGetName"); err != nil {
		return err
	}
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	d.name = string(name)
	return nil
}

func (d *device) attr(a int) (int, error) {
	var v int32
	if err := check(call(d.l.drv.cuDeviceGetAttribute, uintptr(unsafe.Pointer(&v)), uintptr(a), uintptr(d.dev)), "cuDeviceGetAttribute"); err != nil {
		return 0, err
	}
	return int(v), nil
}

// do runs f with the device's context current and returns its error. It
// runs f on the calling goroutine, locked to its OS thread for the call with
// the (primary) context made current there: handing every call to the
// worker goroutine cost a thread switch, about 20 µs, per operation, which
// bounded decode by host submission. Calls are serialised by a mutex (they
// share the launch argument slots). The worker still initialises and
// releases the context.
func (d *device) do(f func() error) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	goruntime.LockOSThread()
	defer goruntime.UnlockOSThread()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cuda: panic in a device call: %v", r)
		}
	}()
	if err := check(call(d.l.drv.cuCtxSetCurrent, d.ctx), "cuCtxSetCurrent"); err != nil {
		return err
	}
	return f()
}

// onWorker runs f on the worker thread (context release at close).
func (d *device) onWorker(f func() error) error {
	errc := make(chan error, 1)
	d.jobs <- func() { errc <- f() }
	return <-errc
}

// close releases the primary context and stops the worker.
func (d *device) close() error {
	d.mu.Lock()
	err := d.onWorker(func() error {
		return check(call(d.l.drv.cuDevicePrimaryCtxRelease, uintptr(d.dev)), "cuDevicePrimaryCtxRelease")
	})
	d.mu.Unlock()
	close(d.jobs)
	return err
}

// The helpers below must run on the worker (inside do).

func (d *device) malloc(n int) (uintptr, error) {
	var p uintptr
	if err := check(call(d.l.drv.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n)), fmt.Sprintf("cuMemAlloc(%d)", n)); err != nil {
		return 0, err
	}
	return p, nil
}

func (d *device) free(p uintptr) error {
	if err := d.barrier(); err != nil {
		return err
	}
	if p == 0 {
		return nil
	}
	return check(call(d.l.drv.cuMemFree, p), "cuMemFree")
}

func (d *device) memset(p uintptr, n int) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuMemsetD8, p, 0, uintptr(n)), "cuMemsetD8")
}

func (d *device) htod(dst uintptr, src unsafe.Pointer, n int) error {
	if err := d.barrier(); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return check(call(d.l.drv.cuMemcpyHtoD, dst, uintptr(src), uintptr(n)), "cuMemcpyHtoD")
}

func (d *device) dtoh(dst unsafe.Pointer, src uintptr, n int) error {
	if err := d.barrier(); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	return check(call(d.l.drv.cuMemcpyDtoH, uintptr(dst), src, uintptr(n)), "cuMemcpyDtoH")
}

func (d *device) dtod(dst, src uintptr, n int) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuMemcpyDtoD, dst, src, uintptr(n)), "cuMemcpyDtoD")
}

// htodAsync copies from pinned host memory on the compute stream.
func (d *device) htodAsync(dst uintptr, src unsafe.Pointer, n int) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuMemcpyHtoDAsync, dst, uintptr(src), uintptr(n), d.stream), "cuMemcpyHtoDAsync")
}

func (d *device) sync() error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuCtxSynchronize), "cuCtxSynchronize")
}

// hostAlloc allocates pinned host memory (portable).
func (d *device) hostAlloc(n int) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	if err := check(call(d.l.drv.cuMemHostAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n), 1), fmt.Sprintf("cuMemHostAlloc(%d)", n)); err != nil {
		return nil, err
	}
	return p, nil
}

func (d *device) hostFree(p unsafe.Pointer) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuMemFreeHost, uintptr(p)), "cuMemFreeHost")
}

func (d *device) memInfo() (free, total int, err error) {
	var f, t uintptr
	err = check(call(d.l.drv.cuMemGetInfo, uintptr(unsafe.Pointer(&f)), uintptr(unsafe.Pointer(&t))), "cuMemGetInfo")
	return int(f), int(t), err
}

// event helpers (GPU timing).
func (d *device) eventCreate() (uintptr, error) {
	var e uintptr
	err := check(call(d.l.drv.cuEventCreate, uintptr(unsafe.Pointer(&e)), 0), "cuEventCreate")
	return e, err
}

// eventRecord records e on the compute stream.
func (d *device) eventRecord(e uintptr) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuEventRecord, e, d.stream), "cuEventRecord")
}

func (d *device) eventElapsed(start, end uintptr) (float32, error) {
	if err := d.barrier(); err != nil {
		return 0, err
	}
	if err := check(call(d.l.drv.cuEventSynchronize, end), "cuEventSynchronize"); err != nil {
		return 0, err
	}
	var ms float32
	err := check(call(d.l.drv.cuEventElapsedTime, uintptr(unsafe.Pointer(&ms)), start, end), "cuEventElapsedTime")
	return ms, err
}

// eventRecordOn records e on stream s (0 = the legacy default stream).
func (d *device) eventRecordOn(e, s uintptr) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuEventRecord, e, s), "cuEventRecord")
}

// streamWaitEvent makes stream s wait for e.
func (d *device) streamWaitEvent(s, e uintptr) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuStreamWaitEvent, s, e, 0), "cuStreamWaitEvent")
}

// streamCreate makes a stream that does not synchronise with the legacy
// default stream (CU_STREAM_NON_BLOCKING).
func (d *device) streamCreate() (uintptr, error) {
	var s uintptr
	err := check(call(d.l.drv.cuStreamCreate, uintptr(unsafe.Pointer(&s)), 1), "cuStreamCreate")
	return s, err
}

// streamCreateFlags makes a stream with CUstream_flags f (0: blocking, it
// orders with the legacy default stream).
func (d *device) streamCreateFlags(f int) (uintptr, error) {
	var s uintptr
	err := check(call(d.l.drv.cuStreamCreate, uintptr(unsafe.Pointer(&s)), uintptr(f)), "cuStreamCreate")
	return s, err
}

func (d *device) streamSync(s uintptr) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuStreamSynchronize, s), "cuStreamSynchronize")
}

func (d *device) streamDestroy(s uintptr) error {
	return check(call(d.l.drv.cuStreamDestroy, s), "cuStreamDestroy")
}

// htodOn copies from pinned host memory on stream s.
func (d *device) htodOn(dst uintptr, src unsafe.Pointer, n int, s uintptr) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuMemcpyHtoDAsync, dst, uintptr(src), uintptr(n), s), "cuMemcpyHtoDAsync")
}

// eventSync waits for e on the host.
func (d *device) eventSync(e uintptr) error {
	if err := d.barrier(); err != nil {
		return err
	}
	return check(call(d.l.drv.cuEventSynchronize, e), "cuEventSynchronize")
}

func (d *device) eventDestroy(e uintptr) error {
	return check(call(d.l.drv.cuEventDestroy, e), "cuEventDestroy")
}
