package cuda

import (
	"errors"
	"fmt"
	"sync"
)

// ErrNoCUDA reports that the CUDA driver or NVRTC library could not be loaded
// on this machine (or that the platform cannot load them at all).
var ErrNoCUDA = errors.New("cuda: CUDA driver or NVRTC not available")

// Result is a CUresult status code from the driver API.
type Result int32

func (r Result) Error() string {
	if name, ok := resultNames[r]; ok {
		return fmt.Sprintf("cuda: %s (%d)", name, int32(r))
	}
	return fmt.Sprintf("cuda: CUresult %d", int32(r))
}

// A few CUresult values tests and callers match with errors.Is.
const (
	ErrInvalidValue   Result = 1
	ErrOutOfMemory    Result = 2
	ErrNotInitialized Result = 3
	ErrNoDevice       Result = 100
	ErrInvalidContext Result = 201
)

var resultNames = map[Result]string{
	1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY", 3: "CUDA_ERROR_NOT_INITIALIZED",
	4: "CUDA_ERROR_DEINITIALIZED", 34: "CUDA_ERROR_STUB_LIBRARY", 46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
	100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE", 200: "CUDA_ERROR_INVALID_IMAGE",
	201: "CUDA_ERROR_INVALID_CONTEXT", 209: "CUDA_ERROR_NO_BINARY_FOR_GPU", 218: "CUDA_ERROR_INVALID_PTX",
	222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 300: "CUDA_ERROR_INVALID_SOURCE", 301: "CUDA_ERROR_FILE_NOT_FOUND",
	400: "CUDA_ERROR_INVALID_HANDLE", 500: "CUDA_ERROR_NOT_FOUND", 600: "CUDA_ERROR_NOT_READY",
	700: "CUDA_ERROR_ILLEGAL_ADDRESS", 701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", 702: "CUDA_ERROR_LAUNCH_TIMEOUT",
	716: "CUDA_ERROR_MISALIGNED_ADDRESS", 719: "CUDA_ERROR_LAUNCH_FAILED", 803: "CUDA_ERROR_SYSTEM_NOT_READY",
	804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE", 999: "CUDA_ERROR_UNKNOWN",
}

func check(r uintptr, op string) error {
	if res := Result(int32(uint32(r))); res != 0 {
		return fmt.Errorf("%s: %w", op, res)
	}
	return nil
}

// NVRTCError is an nvrtcResult status code.
type NVRTCError int32

func (e NVRTCError) Error() string { return fmt.Sprintf("cuda: nvrtc error %d", int32(e)) }

func checkNVRTC(r uintptr, op string) error {
	if res := NVRTCError(int32(uint32(r))); res != 0 {
		return fmt.Errorf("%s: %w", op, res)
	}
	return nil
}

// symbol names one exported function; alternatives are tried in order
// (versioned names first).
type symbol struct {
	ptr   *uintptr
	names []string
}

// driverAPI holds the entry points of libcuda.so.1.
type driverAPI struct {
	cuInit, cuDriverGetVersion, cuDeviceGet, cuDeviceGetAttribute, cuDeviceGetName            uintptr
	cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease, cuCtxSetCurrent, cuCtxSynchronize    uintptr
	cuMemAlloc, cuMemFree, cuMemGetInfo, cuMemsetD8, cuMemHostAlloc, cuMemFreeHost            uintptr
	cuMemcpyHtoD, cuMemcpyDtoH, cuMemcpyDtoD, cuMemcpyHtoDAsync, cuMemcpyDtoHAsync            uintptr
	cuModuleLoadData, cuModuleGetFunction, cuModuleUnload, cuLaunchKernel, cuFuncSetAttribute uintptr
	cuModuleGetGlobal                                                                         uintptr
	cuStreamCreate, cuStreamDestroy, cuStreamSynchronize, cuStreamWaitEvent                   uintptr
	cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsedTime, cuEventDestroy      uintptr
	cuStreamBeginCapture, cuStreamEndCapture, cuGraphInstantiateWithFlags, cuGraphLaunch      uintptr
	cuGraphDestroy, cuGraphExecDestroy                                                        uintptr
	cuOccupancyMaxActiveBlocksPerMultiprocessor, cuLaunchKernelEx                             uintptr
}

func (d *driverAPI) table() []symbol {
	return []symbol{
		{&d.cuInit, []string{"cuInit"}},
		{&d.cuDriverGetVersion, []string{"cuDriverGetVersion"}},
		{&d.cuDeviceGet, []string{"cuDeviceGet"}},
		{&d.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}},
		{&d.cuDeviceGetName, []string{"cuDeviceGetName"}},
		{&d.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}},
		{&d.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&d.cuCtxSynchronize, []string{"cuCtxSynchronize"}},
		{&d.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&d.cuMemFree, []string{"cuMemFree_v2"}},
		{&d.cuMemGetInfo, []string{"cuMemGetInfo_v2"}},
		{&d.cuMemsetD8, []string{"cuMemsetD8_v2"}},
		{&d.cuMemHostAlloc, []string{"cuMemHostAlloc"}},
		{&d.cuMemFreeHost, []string{"cuMemFreeHost"}},
		{&d.cuMemcpyHtoD, []string{"cuMemcpyHtoD_v2"}},
		{&d.cuMemcpyDtoH, []string{"cuMemcpyDtoH_v2"}},
		{&d.cuMemcpyDtoD, []string{"cuMemcpyDtoD_v2"}},
		{&d.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&d.cuMemcpyDtoHAsync, []string{"cuMemcpyDtoHAsync_v2"}},
		{&d.cuModuleLoadData, []string{"cuModuleLoadData"}},
		{&d.cuModuleGetFunction, []string{"cuModuleGetFunction"}},
		{&d.cuModuleUnload, []string{"cuModuleUnload"}},
		{&d.cuModuleGetGlobal, []string{"cuModuleGetGlobal_v2"}},
		{&d.cuLaunchKernel, []string{"cuLaunchKernel"}},
		{&d.cuFuncSetAttribute, []string{"cuFuncSetAttribute"}},
		{&d.cuStreamCreate, []string{"cuStreamCreate"}},
		{&d.cuStreamDestroy, []string{"cuStreamDestroy_v2", "cuStreamDestroy"}},
		{&d.cuStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&d.cuStreamWaitEvent, []string{"cuStreamWaitEvent"}},
		{&d.cuEventCreate, []string{"cuEventCreate"}},
		{&d.cuEventRecord, []string{"cuEventRecord"}},
		{&d.cuEventSynchronize, []string{"cuEventSynchronize"}},
		{&d.cuEventElapsedTime, []string{"cuEventElapsedTime_v2", "cuEventElapsedTime"}},
		{&d.cuEventDestroy, []string{"cuEventDestroy_v2", "cuEventDestroy"}},
		{&d.cuStreamBeginCapture, []string{"cuStreamBeginCapture_v2", "cuStreamBeginCapture"}},
		{&d.cuStreamEndCapture, []string{"cuStreamEndCapture"}},
		{&d.cuGraphInstantiateWithFlags, []string{"cuGraphInstantiateWithFlags"}},
		{&d.cuGraphLaunch, []string{"cuGraphLaunch"}},
		{&d.cuGraphDestroy, []string{"cuGraphDestroy"}},
		{&d.cuGraphExecDestroy, []string{"cuGraphExecDestroy"}},
		{&d.cuOccupancyMaxActiveBlocksPerMultiprocessor, []string{"cuOccupancyMaxActiveBlocksPerMultiprocessor"}},
		{&d.cuLaunchKernelEx, []string{"cuLaunchKernelEx"}},
	}
}

// nvrtcAPI holds the entry points of libnvrtc.
type nvrtcAPI struct {
	nvrtcVersion, nvrtcCreateProgram, nvrtcCompileProgram, nvrtcDestroyProgram   uintptr
	nvrtcGetProgramLogSize, nvrtcGetProgramLog, nvrtcGetCUBINSize, nvrtcGetCUBIN uintptr
}

func (n *nvrtcAPI) table() []symbol {
	return []symbol{
		{&n.nvrtcVersion, []string{"nvrtcVersion"}},
		{&n.nvrtcCreateProgram, []string{"nvrtcCreateProgram"}},
		{&n.nvrtcCompileProgram, []string{"nvrtcCompileProgram"}},
		{&n.nvrtcDestroyProgram, []string{"nvrtcDestroyProgram"}},
		{&n.nvrtcGetProgramLogSize, []string{"nvrtcGetProgramLogSize"}},
		{&n.nvrtcGetProgramLog, []string{"nvrtcGetProgramLog"}},
		{&n.nvrtcGetCUBINSize, []string{"nvrtcGetCUBINSize"}},
		{&n.nvrtcGetCUBIN, []string{"nvrtcGetCUBIN"}},
	}
}

// Candidate library names, most specific first.
var (
	driverLibs = []string{"libcuda.so.1", "libcuda.so"}
	nvrtcLibs  = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
		"/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12",
		"/usr/local/cuda/targets/x86_64-linux/lib/libnvrtc.so.13"}
)

type libs struct {
	drv   driverAPI
	nvrtc nvrtcAPI
}

// loadLibs loads both libraries once; errors wrap ErrNoCUDA.
var loadLibs = sync.OnceValues(func() (*libs, error) {
	l := &libs{}
	if err := bind(driverLibs, l.drv.table()); err != nil {
		return nil, fmt.Errorf("%w: driver: %v", ErrNoCUDA, err)
	}
	if err := bind(nvrtcLibs, l.nvrtc.table()); err != nil {
		return nil, fmt.Errorf("%w: nvrtc: %v", ErrNoCUDA, err)
	}
	return l, nil
})

// Available reports whether the CUDA libraries load here (it does not
// initialise a device). The error says why not.
func Available() error {
	_, err := loadLibs()
	return err
}
