package cuda

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"unsafe"

	"github.com/fmoe/fmoe/internal/atomicfile"
)

//go:embed kernels.cu
var kernelsCore string

//go:embed kernels_mixer.cu
var kernelsMixer string

//go:embed kernels_fast.cu
var kernelsFast string

//go:embed kernels_fuse.cu
var kernelsFuse string

//go:embed kernels_mx.cu
var kernelsMX string

//go:embed kernels_mxi.cu
var kernelsMXI string

//go:embed kernels_mma.cu
var kernelsMMA string

//go:embed kernels_wg.cu
var kernelsWG string

// kernelSource is the whole CUDA C translation unit (default build).
func kernelSource() string { return kernelSourceDQ(false) }

// kernelSourceDQ is kernelSource with the decode matvecs' dequantization
// chosen: dq true builds the masked-subnormal form (FMOE_DQ 1), false the
// three-instruction form (FMOE_DQ 0).
func kernelSourceDQ(dq bool) string {
	pre := "#define FMOE_DQ 0\n"
	if dq {
		pre = "#define FMOE_DQ 1\n"
	}
	if probeOn() {
		pre += "#define FMOE_PROBE 1\n" // the stage probe (trace.go)
	}
	return pre + kernelsCore + "\n" + kernelsMixer + "\n" + kernelsFast + "\n" + kernelsFuse + "\n" + kernelsMX + "\n" + kernelsMXI + "\n" + kernelsMMA + "\n" + kernelsWG
}

// ErrCompile reports that NVRTC rejected the kernel source; the error text
// carries the compiler log.
var ErrCompile = errors.New("cuda: kernel compilation failed")

// arch is the --gpu-architecture NVRTC compiles for: the device's compute
// capability, or sm_90a when d.sm90a (Hopper's feature target, the one that
// has wgmma, kernels_wg.cu; a cubin for it runs only on 9.0 devices, which
// is all it is built for). NVRTC takes one architecture per program, so the
// whole source is built for it.
func (d *device) arch() string {
	if d.sm90a {
		return "sm_90a"
	}
	return fmt.Sprintf("sm_%d%d", d.ccMajor, d.ccMinor)
}

// canSM90A reports whether sm_90a can be built here: compute capability 9.0
// and NVRTC 12 or later.
func (d *device) canSM90A() bool {
	if d.ccMajor != 9 || d.ccMinor != 0 {
		return false
	}
	maj, _, err := d.nvrtcVersion()
	return err == nil && maj >= 12
}

// wantSM90A: build for sm_90a when the warpgroup MMA kernels are on
// (QMMAWG, FMOE_CUDA_QMMA_WG=1), or as FMOE_CUDA_SM90A=1 or 0 says. Until
// those kernels are the default, the default build stays sm_90.
func wantSM90A() bool {
	switch os.Getenv("FMOE_CUDA_SM90A") {
	case "1":
		return true
	case "0":
		return false
	}
	return qmmwWanted()
}

// wgmma reports whether the warpgroup MMA kernels are compiled in.
func (d *device) wgmma() bool { return d.sm90a }

func (d *device) nvrtcVersion() (int, int, error) {
	var maj, min int32
	err := checkNVRTC(call(d.l.nvrtc.nvrtcVersion, uintptr(unsafe.Pointer(&maj)), uintptr(unsafe.Pointer(&min))), "nvrtcVersion")
	return int(maj), int(min), err
}

// cubin returns the compiled kernels for this device, from the disk cache
// (os.UserCacheDir()/fmoe/cuda, keyed by source hash, arch and NVRTC
// version) or freshly compiled. cacheDir "" picks the default; "-" disables
// the cache.
func (d *device) cubin(src, cacheDir string) ([]byte, error) {
	maj, min, err := d.nvrtcVersion()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(src))
	key := fmt.Sprintf("%s-%s-nvrtc%d.%d.cubin", hex.EncodeToString(sum[:12]), d.arch(), maj, min)
	if cacheDir == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			cacheDir = filepath.Join(dir, "fmoe", "cuda")
		}
	}
	if cacheDir != "" && cacheDir != "-" {
		if b, err := os.ReadFile(filepath.Join(cacheDir, key)); err == nil && len(b) > 0 {
			return b, nil
		}
	}
	bin, err := d.compile(src)
	if err != nil {
		return nil, err
	}
	if cacheDir != "" && cacheDir != "-" {
		_ = writeCache(cacheDir, key, bin) // a cache that cannot be written only costs time
	}
	return bin, nil
}

func writeCache(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// atomic (temporary file, fsync, rename, directory sync): a crash leaves
	// the old cache or none, never a torn cubin under the final name
	return atomicfile.Write(context.Background(), filepath.Join(dir, name), 0o644, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// compile runs NVRTC for this device's architecture and returns the cubin.
func (d *device) compile(src string, extra ...string) ([]byte, error) {
	_, bin, err := d.compileLog(src, extra...)
	return bin, err
}

// compileLog is compile that also returns NVRTC's log (warnings, and the
// ptxas report when extra asks for it).
func (d *device) compileLog(src string, extra ...string) (string, []byte, error) {
	n := &d.l.nvrtc
	csrc, cname := cstring(src), cstring("fmoe_kernels.cu")
	var prog uintptr
	if err := checkNVRTC(call(n.nvrtcCreateProgram, uintptr(unsafe.Pointer(&prog)), uintptr(unsafe.Pointer(&csrc[0])),
		uintptr(unsafe.Pointer(&cname[0])), 0, 0, 0), "nvrtcCreateProgram"); err != nil {
		return "", nil, err
	}
	defer call(n.nvrtcDestroyProgram, uintptr(unsafe.Pointer(&prog)))
	opts := [][]byte{cstring("--gpu-architecture=" + d.arch()), cstring("--std=c++17"), cstring("-default-device")}
	for _, e := range extra {
		opts = append(opts, cstring(e))
	}
	ptrs := make([]uintptr, len(opts))
	for i, o := range opts {
		ptrs[i] = uintptr(unsafe.Pointer(&o[0]))
	}
	res := call(n.nvrtcCompileProgram, prog, uintptr(len(ptrs)), uintptr(unsafe.Pointer(&ptrs[0])))
	goruntime.KeepAlive(opts)
	var lsize uintptr
	log := ""
	if call(n.nvrtcGetProgramLogSize, prog, uintptr(unsafe.Pointer(&lsize))) == 0 && lsize > 1 {
		buf := make([]byte, lsize)
		if call(n.nvrtcGetProgramLog, prog, uintptr(unsafe.Pointer(&buf[0]))) == 0 {
			log = string(buf[:lsize-1])
		}
	}
	if res != 0 {
		return log, nil, fmt.Errorf("%w for %s (nvrtc %d): %s", ErrCompile, d.arch(), int32(uint32(res)), log)
	}
	var size uintptr
	if err := checkNVRTC(call(n.nvrtcGetCUBINSize, prog, uintptr(unsafe.Pointer(&size))), "nvrtcGetCUBINSize"); err != nil {
		return "", nil, err
	}
	bin := make([]byte, size)
	if err := checkNVRTC(call(n.nvrtcGetCUBIN, prog, uintptr(unsafe.Pointer(&bin[0]))), "nvrtcGetCUBIN"); err != nil {
		return "", nil, err
	}
	return log, bin, nil
}

// loadModule loads the cubin and resolves every kernel in names.
func (d *device) loadModule(bin []byte, names []string) (mod uintptr, fns map[string]uintptr, err error) {
	if err := check(call(d.l.drv.cuModuleLoadData, uintptr(unsafe.Pointer(&mod)), uintptr(unsafe.Pointer(&bin[0]))), "cuModuleLoadData"); err != nil {
		return 0, nil, err
	}
	fns = make(map[string]uintptr, len(names))
	for _, name := range names {
		var f uintptr
		cn := cstring(name)
		if err := check(call(d.l.drv.cuModuleGetFunction, uintptr(unsafe.Pointer(&f)), mod, uintptr(unsafe.Pointer(&cn[0]))), "cuModuleGetFunction "+name); err != nil {
			call(d.l.drv.cuModuleUnload, mod)
			return 0, nil, err
		}
		fns[name] = f
	}
	return mod, fns, nil
}

// funcAttrMaxDynamicShared is CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
const funcAttrMaxDynamicShared = 8

func (d *device) setMaxDynamicShared(f uintptr, bytes int) error {
	return check(call(d.l.drv.cuFuncSetAttribute, f, funcAttrMaxDynamicShared, uintptr(bytes)), "cuFuncSetAttribute")
}

// karg is one kernel argument: device pointers (uintptr), int, int64 or float32.
type karg = any

// launch starts kernel f on the compute stream. Arguments are packed into
// 8-byte slots owned by the device (launches are serialised on the worker).
func (d *device) launch(f uintptr, grid, block [3]int, smem int, args ...karg) error {
	if len(args) > len(d.slots) {
		return fmt.Errorf("cuda: %d kernel arguments, at most %d", len(args), len(d.slots))
	}
	for i, a := range args {
		switch v := a.(type) {
		case uintptr:
			d.slots[i] = uint64(v)
		case int:
			d.slots[i] = uint64(uint32(int32(v)))
		case int64:
			d.slots[i] = uint64(v)
		case float32:
			d.slots[i] = uint64(*(*uint32)(unsafe.Pointer(&v)))
		default:
			return fmt.Errorf("cuda: kernel argument %d has unsupported type %T", i, a)
		}
		d.params[i] = uintptr(unsafe.Pointer(&d.slots[i]))
	}
	for i := range grid {
		if grid[i] <= 0 || block[i] <= 0 {
			return nil // empty launch
		}
	}
	if d.trace != nil {
		d.traceLaunch(f, grid, d.names)
	}
	if d.graphs != nil {
		return d.graphs.launch(d, f, grid, block, smem, len(args))
	}
	return d.rawLaunch(f, grid, block, smem)
}

// rawLaunch (worker only) launches f on the compute stream with the
// arguments already in d.params.
func (d *device) rawLaunch(f uintptr, grid, block [3]int, smem int) error {
	// PDL only for launches captured into graphs (repeated decode steps):
	// eager launches with it made prefill slower on an H200 (313 → 242
	// tok/s, also with it limited to one-wave grids).
	pdl := d.pdl && d.capturing
	l := func() uintptr {
		if pdl {
			c := &d.lcfg
			c.gridX, c.gridY, c.gridZ = uint32(grid[0]), uint32(grid[1]), uint32(grid[2])
			c.blockX, c.blockY, c.blockZ = uint32(block[0]), uint32(block[1]), uint32(block[2])
			c.smem, c.stream = uint32(smem), d.stream
			d.lattr.id = attrProgrammaticStreamSerialization
			d.lattr.val[0] = 1 // programmaticStreamSerializationAllowed
			c.attrs, c.nattrs = uintptr(unsafe.Pointer(&d.lattr)), 1
			return call(d.l.drv.cuLaunchKernelEx, uintptr(unsafe.Pointer(c)), f, uintptr(unsafe.Pointer(&d.params[0])), 0)
		}
		return call(d.l.drv.cuLaunchKernel, f, uintptr(grid[0]), uintptr(grid[1]), uintptr(grid[2]),
			uintptr(block[0]), uintptr(block[1]), uintptr(block[2]), uintptr(smem), d.stream,
			uintptr(unsafe.Pointer(&d.params[0])), 0)
	}
	if d.prof != nil {
		return d.launchProfiled(f, grid, l)
	}
	return check(l(), "cuLaunchKernel")
}
