// Package cuda is fmoe's NVIDIA backend: the CUDA driver API and NVRTC bound
// at run time through purego (no cgo), kernels written in CUDA C embedded in
// the binary and compiled by NVRTC for the device's compute capability
// (cached on disk under os.UserCacheDir()/fmoe/cuda), and a runtime.Backend
// that runs the Qwen3.5-MoE forward pass on one GPU.
//
// Layout of the package:
//
//   - lib_*.go, driver.go: the symbol table of libcuda.so.1 and libnvrtc.so.N,
//     loaded lazily; CUresult as the typed error Result; ErrNoCUDA when the
//     libraries are missing (the package builds and returns ErrNoCUDA on every
//     platform without them).
//   - worker.go: the one OS-thread-locked goroutine that owns the CUDA
//     context and runs every driver call.
//   - nvrtc.go: compilation of the embedded kernels and the on-disk cache.
//   - kernels*.cu: the CUDA C source (kernels_fast.cu: decode matvec variants,
//     tiled prefill GEMM with split-K, batched MoE kernels).
//   - backend.go, ops.go, mixer.go, moe.go: the runtime.Backend.
//
// Experts live in a GPU cache with a byte budget (cachepolicy.go: LRU while a
// token's experts fit, else a frequency-protected segment that does not
// thrash, FMOE_CUDA_CACHE=lru for plain LRU); kernels
// find them through a device-side table of pointers per layer, so a layer
// whose experts are all resident needs no host round-trip. Misses come from
// an optional pinned host tier (Options.HostCacheBytes) or are read from the
// runtime.ExpertSource (parallel pread) into pinned buffers, and are copied on
// a copy stream the compute stream waits for through events. Counters per
// tier and per layer come from Backend.Stats (runtime.ExpertCounterer);
// SetRouteOverride (runtime.RouteOverrider) is for benchmarks only. Device
// calls run on the caller's goroutine, locked to its OS thread for the call.
//
// Kernels and async copies go to one created (blocking) compute stream.
// graph.go replays repeated launch sequences (decode steps: every per-token
// value such as the KV length lives in device memory) as CUDA graphs without
// help from the engine (Options.NoGraphs, FMOE_CUDA_GRAPHS=0 turn it off);
// profile.go times every kernel with GPU events (Options.Profile,
// FMOE_CUDA_PROFILE=1; the table goes to stderr at Close).
package cuda
