// ---- fused decode kernels (fuse.go builds their descriptors) ----
//
// qmvb: several decode matvecs (T = 1) in one launch, with what the engine
// asks right before or after them folded in. The descriptor D (int64 words,
// device memory, written once per distinct launch) holds:
//   0 items  1 in  2 group  3 mode (1 norm, 2 swiglu, 4 gate, 8 top-k, 16 warp rows)  4 eps bits
//   5 nx  6 nw  7 nt       norm: every item reads x = RMSNorm(nx)·nw, computed
//                           as rn·W·(nx⊙nw) with Σnx² gathered while the block
//                           reads nx for the dot products; block 0 writes the
//                           normed row to nt
//   8 gW 9 gS 10 gB 11 gx 12 gy 19 gin   gate: a 1-row matvec every block
//                           computes (γ = σ(gW·gx)), block 0 writes gW·gx to gy
//   13 sw                  swiglu: items 0 (gate) and 1 (up), 4 rows of each per
//                           block; sw[r] = silu(g[r])·u[r]
//   14 E 15 K 16 ids 17 wts 18 counter   top-k: the last block to finish
//                           picks the top-K of item 0's output (router logits)
//   21 ov                  top-k: ids the host wrote (routing override of the
//                           benchmarks, pinned memory; 0: none) replace the picks
//   24 + 10i: item i: W S B x y add gt out blk0 -
// An item's row r: v = W[r]·x; y[r] = v; gt (if set): gt[r] += γ·v, a = gt[r]
// (else a = v); add (if set): add[r] += a. Items of one launch share the
// number of bits, the group and the width (in). Blocks of 4 warps take 8 rows
// and split the columns (as qmv?_k8); in mode warp rows (not with swiglu or
// top-k) each warp takes 8 rows of its own, 32 per block, lanes striding the
// columns (as qmv?_r8u1: for large batches of short rows).

#define QB_ITEM 24
#define QB_STRIDE 10

// qb_store: an item's row result v: y[row] = v; with gt: gt[row] += γ·v (a
// = the new gt[row], else a = v); with add: add[row] += a.
__device__ __forceinline__ void qb_store(const long long* __restrict__ I, int row, float v, float gam) {
  ((float*)I[4])[row] = v;
  float a = v;
  if (I[6]) {
    float* gt = (float*)I[6];
    a = gt[row] + gam * v;
    gt[row] = a;
  }
  if (I[5]) {
    float* ad = (float*)I[5];
    ad[row] += a;
  }
}

template <int BITS>
__device__ __forceinline__ void qmvb_body(const long long* __restrict__ D) {
  extern __shared__ float qsm[];  // top-k: E floats
  __shared__ float red[4][8];
  __shared__ float sh[32];
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int n = (int)D[0], in = (int)D[1], group = (int)D[2], mode = (int)D[3];
  const float eps = __int_as_float((int)D[4]);
  int it = 0;
  for (int i = 1; i < n; i++)
    if ((int)D[QB_ITEM + QB_STRIDE * i + 8] <= (int)blockIdx.x) it = i;
  const long long* I = D + QB_ITEM + QB_STRIDE * it;
  const float* nw = (mode & 1) ? (const float*)D[6] : nullptr;
  float gam = 0.f;
  if (mode & 4) {
    const int gin = (int)D[19];
    const u32* const gw[1] = {(const u32*)D[8]};
    const u16* const gs[1] = {(const u16*)D[9]};
    const u16* const gb[1] = {(const u16*)D[10]};
    float a[1] = {0.f};
    qmv_rows<BITS, 1, 1>(gw, gs, gb, gin, group, (const float*)D[11], a, tid, 128);
    const float v = warp_sum(a[0]);
    if (lane == 0) red[w][0] = v;
    __syncthreads();
    const float g = (red[0][0] + red[1][0]) + (red[2][0] + red[3][0]);
    __syncthreads();
    gam = sigm(g);
    if (blockIdx.x == 0 && tid == 0) ((float*)D[12])[0] = g;
  }
  const int out = (int)I[7];
  const int wpr = in / (32 / BITS), gpr = in / group;
  const bool sw = (mode & 2) != 0;
  const bool wrows = (mode & 16) != 0;  // warp rows: each warp its own 8 rows, lanes over the columns
  const int rb = ((int)blockIdx.x - (int)I[8]) * (wrows ? 32 : 8);
  const int r0 = sw ? (int)blockIdx.x * 4 : wrows ? rb + 8 * w : rb;
  const u32* wr[8];
  const u16 *sr[8], *br[8];
#pragma unroll
  for (int r = 0; r < 8; r++) {
    const long long* J = (sw && r >= 4) ? D + QB_ITEM + QB_STRIDE : I;
    const size_t rr = (size_t)min(r0 + (sw ? (r & 3) : r), out - 1);
    wr[r] = (const u32*)J[0] + rr * wpr;
    sr[r] = (const u16*)J[1] + rr * gpr;
    br[r] = (const u16*)J[2] + rr * gpr;
  }
  float acc[8];
#pragma unroll
  for (int r = 0; r < 8; r++) acc[r] = 0.f;
  float ss = 0.f;
  const int cs = wrows ? lane : tid, cst = wrows ? 32 : 128;
  if (mode & 1)
    qmv_rows<BITS, 8, 1, true>(wr, sr, br, in, group, (const float*)I[3], acc, cs, cst, nw, &ss);
  else
    qmv_rows<BITS, 8, 1>(wr, sr, br, in, group, (const float*)I[3], acc, cs, cst);
#pragma unroll
  for (int r = 0; r < 8; r++) {
    const float v = warp_sum(acc[r]);
    if (lane == 0) red[w][r] = v;
  }
  // norm: the block read every column once; W·(RMSNorm(x)·nw) = rn·W·(x⊙nw)
  float rn = 1.f;
  if (mode & 1) {
    ss = block_sum(ss, sh);  // (its barriers also publish red)
    if (wrows) ss *= 0.25f;  // each warp read every column: 4 equal sums, exactly 4·Σx²
    rn = rsqrtf(ss / (float)in + eps);
    const float* nx = (const float*)D[5];
    float* nt = (float*)D[7];
    if (blockIdx.x == 0 && nt != nullptr)
      for (int c = tid; c < in; c += blockDim.x) nt[c] = nx[c] * rn * nw[c];
  }
  __syncthreads();
  if (sw) {
    if (tid < 4 && r0 + tid < out) {
      const int row = r0 + tid;
      const float g = rn * ((red[0][tid] + red[1][tid]) + (red[2][tid] + red[3][tid]));
      const float u = rn * ((red[0][tid + 4] + red[1][tid + 4]) + (red[2][tid + 4] + red[3][tid + 4]));
      ((float*)I[4])[row] = g;
      ((float*)D[QB_ITEM + QB_STRIDE + 4])[row] = u;
      ((float*)D[13])[row] = silu(g) * u;
    }
  } else if (tid < (wrows ? 32 : 8) && rb + tid < out) {
    const int row = rb + tid;
    const float v = rn * (wrows ? red[tid >> 3][tid & 7] : (red[0][tid] + red[1][tid]) + (red[2][tid] + red[3][tid]));
    qb_store(I, row, v, gam);
  }
  if (mode & 8) {
    __threadfence();
    __syncthreads();
    if (tid == 0) last = atomicAdd((unsigned*)D[18], 1u) == gridDim.x - 1;
    __syncthreads();
    if (last) {
      __threadfence();
      if (w == 0) {
        topk_warp((const float*)I[4], (int)D[14], (int)D[15], (int*)D[16], (float*)D[17], qsm);
        topk_override((const int*)D[21], (int)D[15], (int*)D[16]);
      }
      if (tid == 0) *(unsigned*)D[18] = 0u;
    }
  }
}

extern "C" __global__ void __launch_bounds__(128) qmvb2(const long long* D) { pdl_wait(); qmvb_body<2>(D); }
extern "C" __global__ void __launch_bounds__(128) qmvb4(const long long* D) { pdl_wait(); qmvb_body<4>(D); }
extern "C" __global__ void __launch_bounds__(128) qmvb8(const long long* D) { pdl_wait(); qmvb_body<8>(D); }
// qmvb?o: the same with 5 blocks per SM asked of the register allocator (96
// registers instead of 128, for more warps' loads in flight; NVRTC 13.0 spills
// there, so it is not the default; BenchmarkDecodeShapes compares them,
// FMOE_CUDA_QMVB=o selects it).
extern "C" __global__ void __launch_bounds__(128, 5) qmvb2o(const long long* D) { pdl_wait(); qmvb_body<2>(D); }
extern "C" __global__ void __launch_bounds__(128, 5) qmvb4o(const long long* D) { pdl_wait(); qmvb_body<4>(D); }
extern "C" __global__ void __launch_bounds__(128, 5) qmvb8o(const long long* D) { pdl_wait(); qmvb_body<8>(D); }

// moe_dnc: the expert down projections with the combine folded in:
// dst[t, r] = Σ_k w[t,k]·D_{e_k}[r]·h[t*K+k] for t = t0 + blockIdx.y. A block
// of 4 warps takes 4 rows; warp w walks the pairs k = w, w+4, …; the warps'
// sums meet in shared memory in a fixed order (deterministic).
template <int BITS>
__device__ __forceinline__ void moe_dnc_body(const u64* table, const int* ids, const float* wts, const float* hbuf, float* dst,
                                             int Hd, int I, int group, int K, int t0, ProjOff d) {
  __shared__ float red[4][4];
  const int r0 = blockIdx.x * 4;
  const int t = t0 + blockIdx.y;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int wpr = I / (32 / BITS), gpr = I / group;
  float tot[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k = w; k < K; k += 4) {
    const int p = t * K + k;
    const char* base = reinterpret_cast<const char*>(table[ids[p]]);
    const u32* DW = (const u32*)(base + d.w);
    const u16 *DS = (const u16*)(base + d.s), *DB = (const u16*)(base + d.b);
    const u32* wr[4];
    const u16 *sr[4], *br[4];
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const size_t rr = (size_t)min(r0 + r, Hd - 1);
      wr[r] = DW + rr * wpr; sr[r] = DS + rr * gpr; br[r] = DB + rr * gpr;
    }
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    qmv_rows<BITS, 4, 1>(wr, sr, br, I, group, hbuf + (size_t)p * I, acc, lane, 32);
    const float wk = wts[p];
#pragma unroll
    for (int r = 0; r < 4; r++) tot[r] = fmaf(wk, warp_sum(acc[r]), tot[r]);
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < 4; r++) red[w][r] = tot[r];
  }
  __syncthreads();
  if (threadIdx.x < 4 && r0 + threadIdx.x < Hd) {
    const int r = threadIdx.x;
    dst[(size_t)t * Hd + r0 + r] = (red[0][r] + red[1][r]) + (red[2][r] + red[3][r]);
  }
}

#define MOE_DNC_ARGS const u64 *table, const int *ids, const float *wts, const float *hbuf, float *dst, int Hd, int I, int group, int K, int t0, long long dw, long long ds, long long db
extern "C" __global__ void __launch_bounds__(128) moe_dnc2(MOE_DNC_ARGS) { pdl_wait(); moe_dnc_body<2>(table, ids, wts, hbuf, dst, Hd, I, group, K, t0, ProjOff{dw, ds, db}); }
extern "C" __global__ void __launch_bounds__(128) moe_dnc4(MOE_DNC_ARGS) { pdl_wait(); moe_dnc_body<4>(table, ids, wts, hbuf, dst, Hd, I, group, K, t0, ProjOff{dw, ds, db}); }
extern "C" __global__ void __launch_bounds__(128) moe_dnc8(MOE_DNC_ARGS) { pdl_wait(); moe_dnc_body<8>(table, ids, wts, hbuf, dst, Hd, I, group, K, t0, ProjOff{dw, ds, db}); }
