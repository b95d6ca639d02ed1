// fmoe CUDA kernels, compiled at run time by NVRTC (no headers available:
// only builtins). Activations are float32 row-major [T, n]; quantized weights
// are MLX affine: uint32 words holding 32/BITS codes (element i of a word at
// bits (i%per)*BITS), one bf16 scale and bias per group of columns.

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define FINF (__int_as_float(0x7f800000))

__device__ __forceinline__ float bf16f(u16 h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ float sigm(float x) { return 1.f / (1.f + expf(-x)); }
__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

// pdl_wait: with programmatic dependent launch (Hopper on; the backend
// launches every kernel with programmatic stream serialization) a kernel may
// start while the previous one in the stream still runs. Every kernel calls
// this before it reads anything an earlier kernel wrote: it waits until the
// previous grid completed and its writes are visible, then lets the next
// grid be scheduled as this one's blocks retire (a no-op without PDL, and
// before sm_90). Since every kernel waits, completion is transitive: a kernel
// past its wait sees the writes of all earlier kernels.
//
// With FMOE_CUDA_TRACE (trace.go) fmoe_trace points at a device buffer: word
// 0 counts kernels, and thread 0 of block 0 of every kernel appends the
// global timer at the moment its wait returned, i.e. when the kernel before
// it had finished. Consecutive entries time each kernel as it runs in the
// decode graphs, programmatic launch included.
#define FMOE_TRACE_CAP (1 << 20)
__device__ unsigned long long* fmoe_trace;

// With FMOE_CUDA_PROBE (trace.go) fmoe_probe points at 16 classes × 16
// words: thread 0 of block 0 of a probed kernel adds, per stage, the SM
// cycles since the kernel's entry (word stage) and counts its launches
// (word 15). A diagnostic; the host prints the means at Close.
// Built only into the source with FMOE_PROBE defined (nvrtc.go): the
// default kernels carry no probe code.
__device__ unsigned long long* fmoe_probe;
__device__ __forceinline__ void probe(long long t0, int cls, int stage) {
#ifdef FMOE_PROBE
  unsigned long long* p = fmoe_probe;
  if (p != nullptr && (blockIdx.x | threadIdx.x) == 0) {
    atomicAdd(p + cls * 16 + stage, (unsigned long long)(clock64() - t0));
    if (stage == 0) {
      atomicAdd(p + cls * 16 + 15, 1ull);
      unsigned long long t;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
      atomicExch(p + cls * 16 + 12, t);
    }
  }
#endif
}

// probe_exit (with the probe; every thread of the block calls it at the
// block's end): the grid's tail. Block 0's stage 0 stored the global time
// its wait returned (word 12); each block takes the max of its exit time
// (word 13) and counts itself (word 14); the last one adds the latest exit
// minus block 0's wait time to word 11 (ns) and resets words 13 and 14.
__device__ __forceinline__ void probe_exit(int cls) {
#ifdef FMOE_PROBE
  unsigned long long* p = fmoe_probe;
  if (p == nullptr) return;
  __syncthreads();
  if (threadIdx.x == 0) {
    p += cls * 16;
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    atomicMax(p + 13, t);
    __threadfence();
    if (atomicAdd(p + 14, 1ull) == gridDim.x - 1) {
      __threadfence();
      const unsigned long long mx = atomicAdd(p + 13, 0ull), w0 = atomicAdd(p + 12, 0ull);
      atomicAdd(p + 11, mx > w0 ? mx - w0 : 0ull);
      atomicExch(p + 13, 0ull);
      atomicExch(p + 14, 0ull);
    }
  }
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
  if ((blockIdx.x | blockIdx.y | blockIdx.z | threadIdx.x | threadIdx.y | threadIdx.z) == 0) {
    unsigned long long* tr = fmoe_trace;
    if (tr != nullptr) {
      unsigned long long t;
      asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
      const unsigned long long i = atomicAdd(tr, 1ull);
      if (i + 1 < FMOE_TRACE_CAP) tr[i + 1] = t;
    }
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// block_sum returns the sum of v over the block to every thread. sh holds 32 floats.
__device__ float block_sum(float v, float* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  const int nw = (blockDim.x + 31) >> 5;
  float t = lane < nw ? sh[lane] : 0.f;
  return warp_sum(t);
}

// qdot accumulates, for R rows r0.. of a quantized matrix and nt ≤ TT tokens
// of x (row stride in), this lane's partial dot products into acc. VEC reads
// 128-bit chunks of four words (the row must be a whole number of chunks and a
// chunk must lie inside one group); otherwise one word at a time. Per word:
// acc += scale·Σ q·x + bias·Σ x. Codes become floats exactly through the
// 2^23 trick (no int→float conversion).
template <int BITS, int R, int TT, bool VEC>
__device__ __forceinline__ void qdot(const u32* __restrict__ W, const u16* __restrict__ S,
                                     const u16* __restrict__ B, int in, int group, int r0, int nr,
                                     const float* __restrict__ x, int nt, float (&acc)[R][TT]) {
  constexpr int PER = 32 / BITS;
  constexpr u32 MASK = (1u << BITS) - 1u;
  constexpr int WPC = VEC ? 4 : 1;
  const int wpr = in / PER;
  const int gpr = in / group;
  const int nchunks = wpr / WPC;
  const int lane = threadIdx.x & 31;
  for (int c = lane; c < nchunks; c += 32) {
    u32 wv[R][WPC];
    float sc[R], bi[R];
    const int col0 = c * WPC * PER;
    const int g = col0 / group;
#pragma unroll
    for (int r = 0; r < R; r++) {
      const size_t rr = (size_t)(r < nr ? r0 + r : r0);
      if (VEC) {
        const uint4 q = __ldg(reinterpret_cast<const uint4*>(W + rr * wpr) + c);
        wv[r][0] = q.x;
        if (WPC > 1) { wv[r][WPC > 1 ? 1 : 0] = q.y; wv[r][WPC > 2 ? 2 : 0] = q.z; wv[r][WPC > 3 ? 3 : 0] = q.w; }
      } else {
        wv[r][0] = __ldg(W + rr * wpr + c);
      }
      sc[r] = bf16f(__ldg(S + rr * gpr + g));
      bi[r] = bf16f(__ldg(B + rr * gpr + g));
    }
#pragma unroll
    for (int t = 0; t < TT; t++) {
      if (t < nt) {
        const float* xt = x + (size_t)t * in + col0;
#pragma unroll
        for (int wi = 0; wi < WPC; wi++) {
          float xv[PER];
#pragma unroll
          for (int k = 0; k < PER; k += 4) {
            const float4 f = __ldg(reinterpret_cast<const float4*>(xt + wi * PER + k));
            xv[k] = f.x; xv[k + 1] = f.y; xv[k + 2] = f.z; xv[k + 3] = f.w;
          }
          float sx = 0.f;
#pragma unroll
          for (int k = 0; k < PER; k++) sx += xv[k];
#pragma unroll
          for (int r = 0; r < R; r++) {
            const u32 w = wv[r][wi];
            float qx = 0.f;
#pragma unroll
            for (int k = 0; k < PER; k++) {
              const float q = __uint_as_float(0x4B000000u | ((w >> (k * BITS)) & MASK)) - 8388608.f;
              qx = fmaf(q, xv[k], qx);
            }
            acc[r][t] = fmaf(sc[r], qx, fmaf(bi[r], sx, acc[r][t]));
          }
        }
      }
    }
  }
}

// qmm: y[t, r] = W[r]·x[t]. One warp per R rows, TT tokens per blockIdx.y.
template <int BITS, int R, int TT, bool VEC>
__device__ __forceinline__ void qmm_body(const u32* W, const u16* S, const u16* B, const float* x,
                                         float* y, int out, int in, int T, int group) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int r0 = warp * R;
  if (r0 >= out) return;
  const int t0 = blockIdx.y * TT;
  const int nt = min(TT, T - t0);
  const int nr = min(R, out - r0);
  float acc[R][TT];
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < TT; t++) acc[r][t] = 0.f;
  qdot<BITS, R, TT, VEC>(W, S, B, in, group, r0, nr, x + (size_t)t0 * in, nt, acc);
#pragma unroll
  for (int r = 0; r < R; r++)
#pragma unroll
    for (int t = 0; t < TT; t++) {
      const float v = warp_sum(acc[r][t]);
      if ((threadIdx.x & 31) == 0 && r < nr && t < nt) y[(size_t)(t0 + t) * out + r0 + r] = v;
    }
}

#define QMM_ARGS const u32 *W, const u16 *S, const u16 *B, const float *x, float *y, int out, int in, int T, int group
#define QMM(BITS)                                                                                          \
  extern "C" __global__ void __launch_bounds__(128) qmm##BITS##_1v(QMM_ARGS) { pdl_wait(); qmm_body<BITS, 4, 1, true>(W, S, B, x, y, out, in, T, group); }  \
  extern "C" __global__ void __launch_bounds__(128) qmm##BITS##_8v(QMM_ARGS) { pdl_wait(); qmm_body<BITS, 2, 8, true>(W, S, B, x, y, out, in, T, group); }  \
  extern "C" __global__ void __launch_bounds__(128) qmm##BITS##_1s(QMM_ARGS) { pdl_wait(); qmm_body<BITS, 4, 1, false>(W, S, B, x, y, out, in, T, group); } \
  extern "C" __global__ void __launch_bounds__(128) qmm##BITS##_8s(QMM_ARGS) { pdl_wait(); qmm_body<BITS, 2, 8, false>(W, S, B, x, y, out, in, T, group); }
QMM(2)
QMM(4)
QMM(8)

// fmm: dense float32 y[t, r] = W[r]·x[t]; one warp per (row, token).
extern "C" __global__ void fmm(const float* __restrict__ W, const float* __restrict__ x, float* y, int out, int in, int T) { pdl_wait();
  const int r = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int t = blockIdx.y;
  if (r >= out) return;
  const float* w = W + (size_t)r * in;
  const float* xt = x + (size_t)t * in;
  float acc = 0.f;
  for (int c = threadIdx.x & 31; c < in; c += 32) acc = fmaf(w[c], xt[c], acc);
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) y[(size_t)t * out + r] = acc;
}

// embed: dst[i] = dequantized row ids[i] (quantized table) or copy (dense).
template <int BITS>
__device__ __forceinline__ void embedq_body(const u32* W, const u16* S, const u16* B, const int* ids, float* dst, int in, int group) {
  constexpr int PER = 32 / BITS;
  const size_t row = (size_t)ids[blockIdx.x];
  const int wpr = in / PER, gpr = in / group;
  for (int c = threadIdx.x; c < in; c += blockDim.x) {
    const u32 w = W[row * wpr + c / PER];
    const u32 q = (w >> ((c % PER) * BITS)) & ((1u << BITS) - 1u);
    const size_t g = row * gpr + c / group;
    dst[(size_t)blockIdx.x * in + c] = (float)q * bf16f(S[g]) + bf16f(B[g]);
  }
}
extern "C" __global__ void embedq2(const u32* W, const u16* S, const u16* B, const int* ids, float* dst, int in, int group) { pdl_wait(); embedq_body<2>(W, S, B, ids, dst, in, group); }
extern "C" __global__ void embedq4(const u32* W, const u16* S, const u16* B, const int* ids, float* dst, int in, int group) { pdl_wait(); embedq_body<4>(W, S, B, ids, dst, in, group); }
extern "C" __global__ void embedq8(const u32* W, const u16* S, const u16* B, const int* ids, float* dst, int in, int group) { pdl_wait(); embedq_body<8>(W, S, B, ids, dst, in, group); }
extern "C" __global__ void embedf(const float* W, const int* ids, float* dst, int in) { pdl_wait();
  const size_t row = (size_t)ids[blockIdx.x];
  for (int c = threadIdx.x; c < in; c += blockDim.x) dst[(size_t)blockIdx.x * in + c] = W[row * in + c];
}

// rmsnorm over consecutive groups of glen values; one block per group.
extern "C" __global__ void rmsnorm(float* dst, const float* x, const float* w, int glen, float eps) { pdl_wait();
  __shared__ float sh[32];
  const size_t base = (size_t)blockIdx.x * glen;
  float ss = 0.f;
  for (int c = threadIdx.x; c < glen; c += blockDim.x) { const float v = x[base + c]; ss = fmaf(v, v, ss); }
  ss = block_sum(ss, sh);
  const float r = rsqrtf(ss / (float)glen + eps);
  for (int c = threadIdx.x; c < glen; c += blockDim.x) dst[base + c] = x[base + c] * r * w[c];
}

// rmsnorm4: one block per group, the group held in registers (up to 4
// float4 per thread: one read of x); glen % 4 == 0, glen ≤ 16·blockDim.
extern "C" __global__ void rmsnorm4(float* dst, const float* x, const float* w, int glen, float eps) { pdl_wait();
  __shared__ float sh[32];
  const float4* xp = reinterpret_cast<const float4*>(x + (size_t)blockIdx.x * glen);
  float4* dp = reinterpret_cast<float4*>(dst + (size_t)blockIdx.x * glen);
  const float4* wp = reinterpret_cast<const float4*>(w);
  const int n4 = glen / 4;
  float4 v[4];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const int i = threadIdx.x + k * blockDim.x;
    v[k] = i < n4 ? xp[i] : make_float4(0.f, 0.f, 0.f, 0.f);
    ss = fmaf(v[k].x, v[k].x, fmaf(v[k].y, v[k].y, fmaf(v[k].z, v[k].z, fmaf(v[k].w, v[k].w, ss))));
  }
  ss = block_sum(ss, sh);
  const float r = rsqrtf(ss / (float)glen + eps);
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const int i = threadIdx.x + k * blockDim.x;
    if (i < n4) {
      const float4 g = wp[i];
      dp[i] = make_float4(v[k].x * r * g.x, v[k].y * r * g.y, v[k].z * r * g.z, v[k].w * r * g.w);
    }
  }
}

// sigmoid_gate_add2: dst[t, c] += σ(gate[t])·x[t, c], grid-stride over all elements.
extern "C" __global__ void sigmoid_gate_add2(float* dst, const float* x, const float* gate, int cols, long long n) { pdl_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dst[i] += sigm(gate[i / cols]) * x[i];
}

extern "C" __global__ void add_f(float* dst, const float* x, long long n) { pdl_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) dst[i] += x[i];
}
extern "C" __global__ void swiglu_f(float* dst, const float* g, const float* u, long long n) { pdl_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) dst[i] = silu(g[i]) * u[i];
}
extern "C" __global__ void sigmoid_gate_add(float* dst, const float* x, const float* gate, int cols) { pdl_wait();
  const float s = sigm(gate[blockIdx.x]);
  const size_t base = (size_t)blockIdx.x * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[base + c] += s * x[base + c];
}

// ---- argmax (greedy decoding, runtime.Argmaxer) ----
//
// am_key orders (value, -index) as one integer: a larger value wins, then a
// lower index (runtime.Argmax's rule); NaN never wins and -0 counts as +0.
__device__ __forceinline__ unsigned long long am_key(float v, int i) {
  const unsigned int b = __float_as_uint(v == 0.f ? 0.f : v);
  const unsigned int o = v != v ? 0u : ((b & 0x80000000u) ? ~b : (b | 0x80000000u));
  return ((unsigned long long)o << 32) | (unsigned long long)(0xffffffffu - (unsigned int)i);
}

__device__ __forceinline__ unsigned long long block_max_u64(unsigned long long v, unsigned long long* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  const int nw = (blockDim.x + 31) >> 5;
  v = lane < nw ? sh[lane] : 0ull;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// argmax_f writes the index of the largest of x[0..n) to *out (pinned host
// memory). Each block writes its best key to part[block]; the last block to
// finish (count) reduces them in a fixed order and resets count for the next
// launch.
extern "C" __global__ void argmax_f(const float* __restrict__ x, int n, unsigned long long* part, unsigned int* count, int* out) {
  pdl_wait();
  __shared__ unsigned long long sh[32];
  __shared__ bool last;
  unsigned long long best = 0ull;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) best = max(best, am_key(x[i], i));
  best = block_max_u64(best, sh);
  if (threadIdx.x == 0) {
    part[blockIdx.x] = best;
    __threadfence();
    last = atomicAdd(count, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  best = 0ull;
  for (int i = threadIdx.x; i < gridDim.x; i += blockDim.x) best = max(best, ((volatile unsigned long long*)part)[i]);
  best = block_max_u64(best, sh);
  if (threadIdx.x == 0) {
    *out = (int)(0xffffffffu - (unsigned int)(best & 0xffffffffull));
    *count = 0u;
  }
}

// ---- step-latency probes (BenchmarkStepLatency) ----
//
// step_probe is one step of a chain of dependent launches: every block waits
// for the grid before it (pdl_wait), then thread 0 reads a word the previous
// step wrote (of another block) and writes its own, in the half of buf of
// step i's parity. barrier_probe runs n such steps in one persistent launch
// (one block per SM, all resident) with a grid-wide barrier between steps:
// a counter and a generation word (bar[0], bar[1]). Nothing reads the
// results; they measure what a dependent step costs.
extern "C" __global__ void step_probe(unsigned* buf, int i) {
  pdl_wait();
  if (threadIdx.x == 0) {
    const unsigned n = gridDim.x, b = blockIdx.x, rd = (i & 1) ? 0 : n, wr = (i & 1) ? n : 0;
    buf[wr + b] = ((volatile unsigned*)buf)[rd + (b + 1) % n] + 1u;
  }
}

__device__ __forceinline__ void grid_barrier(unsigned* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned* gen = bar + 1;
    const unsigned g = *gen;
    __threadfence();
    if (atomicAdd(bar, 1u) == gridDim.x - 1) {
      bar[0] = 0u;
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      while (*gen == g) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}

extern "C" __global__ void barrier_probe(unsigned* buf, unsigned* bar, int steps) {
  pdl_wait();
  const unsigned n = gridDim.x, b = blockIdx.x;
  for (int i = 0; i < steps; i++) {
    if (threadIdx.x == 0) {
      const unsigned rd = (i & 1) ? 0 : n, wr = (i & 1) ? n : 0;
      buf[wr + b] = ((volatile unsigned*)buf)[rd + (b + 1) % n] + 1u;
    }
    grid_barrier(bar);
  }
}
