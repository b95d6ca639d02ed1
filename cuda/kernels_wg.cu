// ---- qmmw: the prefill GEMM on Hopper's warpgroup MMA (wgmma, sm_90a) ----
//
// y[T, out] = x·Wᵀ for MLX affine 4-bit weights in groups of 64 columns,
// the same arithmetic as qmma4m2p2 (kernels_mma.cu): per group g of a row,
// Σ_k w_k·x_k = s_g·Σ_k q_k·x_k + b_g·Σ_k x_k, the codes q_k exact in bf16,
// x in two bf16 parts (hi + lo), each group's products summed by the tensor
// cores into a fresh float32 accumulator that is then scaled into the
// result. What differs is the instruction: wgmma.mma_async m64nNk16, one
// warpgroup (4 warps) per 64 rows, the codes as A from registers (the
// mma.sync A fragment layout, dequantized as qmma does, k order permuted the
// same way) and x as B from shared memory, asynchronous: the block converts
// the next chunk of x and loads the next codes while the tensor cores work.
//
// Block (qmmw_tile): 2 warpgroups = 128 rows × N tokens (N = 64 for the
// dense GEMM qmmw4, 32 for the grouped experts qmmwe4 / qmmwd4). A chunk is
// one group of 64 columns = 4 MMA steps of 16; the block keeps two chunk
// buffers of x and two chunks of codes in flight.
//
// Shared memory, per chunk buffer: part p, step s, then B's K-major
// no-swizzle layout of core matrices (8 tokens × 16 bytes = 8 bf16 of k):
// token n, logical k kl of the step at byte (n/8)·SBO + (kl/8)·LBO +
// (n%8)·16 + (kl%8)·2 with LBO = 128 (the step's two k halves) and SBO =
// 256 (the next 8 tokens); a step of one part is N/8·256 bytes. Logical
// kl of step s is physical column 16·(kl%8/2) + 4s + 2·(kl/8) + kl%2 of the group (qmma's permutation), so a
// thread that reads x's columns 16t + 4s .. +3 of a token writes one 4-byte
// word into each k half (qmmw_tile says which thread converts what; with
// N = 64 a warp's 32 stores of one step hit 32 distinct banks).
// Σx of each token's group sits beside the buffers.
//
// Compiled only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the
// kernels trap, and the backend never launches them (Backend.qmmwOn).
__device__ __forceinline__ void wg_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void wg_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void wg_wait0() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
#endif
}
// fence_async_smem: this thread's ordinary shared-memory stores become
// visible to the tensor cores' (async proxy) reads after the next barrier.
__device__ __forceinline__ void fence_async_smem() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}
// wg_reg_fence: the compiler may not move uses of v across this point (the
// accumulators of an asynchronous MMA are read only after its wait).
__device__ __forceinline__ void wg_reg_fence(float& v) { asm volatile("" : "+f"(v)::"memory"); }

// wg_desc: a shared-memory matrix descriptor, no swizzle.
__device__ __forceinline__ u64 wg_desc(u32 saddr, u32 lbo, u32 sbo) {
  return (u64)((saddr & 0x3ffffu) >> 4) | ((u64)((lbo >> 4) & 0x3fffu) << 16) | ((u64)((sbo >> 4) & 0x3fffu) << 32);
}

// wg_mma<N>: d (= or +=, by acc) A·B for A = 64×16 bf16 in registers (this
// warp's 16 rows, mma.sync's A fragment) and B = 16×N bf16 at desc; d holds
// this thread's N/2 accumulators (wgmma's D fragment: for each 8 columns j,
// rows g, g, g+8, g+8 at columns 8j + 2t, +1, 8j + 2t, +1).
template <int N>
__device__ __forceinline__ void wg_mma(float (&d)[N / 2], u32 a0, u32 a1, u32 a2, u32 a3, u64 desc, int acc);
template <>
__device__ __forceinline__ void wg_mma<64>(float (&d)[32], u32 a0, u32 a1, u32 a2, u32 a3, u64 desc, int acc) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]),
        "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),
        "+f"(d[31])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(acc));
#endif
}
template <>
__device__ __forceinline__ void wg_mma<32>(float (&d)[16], u32 a0, u32 a1, u32 a2, u32 a3, u64 desc, int acc) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
      "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]),
        "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "l"(desc), "r"(acc));
#endif
}

// QwCodes: one chunk's codes (words 2t, 2t+1 of the group) of this thread's
// rows g and g+8, with their scales and biases.
struct QwCodes {
  uint2 qa, qb;
  u16 sa, sb, ba, bb;
};

// qmmw_tile: the block's 128 rows from r0 of W (rows out, in columns) times
// up to N token rows: xrow(i) is token slot i's x (nullptr: zeros), put(i,
// row, v) stores a result (rows ≥ out are not passed); columns [k0, k1).
// N = 64: every thread converts 4 float4 of one token per chunk (token
// 8w + g, t = lane%4); N = 32: 2 (token 4w + g%4, steps 2·(g/4), +1).
template <int N, class XR, class PUT>
__device__ __forceinline__ void qmmw_tile(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B, int out, int in,
                                          int r0, XR xrow, PUT put, int k0, int k1, int lbo, int sbo) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int STEP = N / 8 * 256, PART = 4 * STEP, BUF = 2 * PART, XF = N / 16;  // XF: float4 per thread per chunk
  __shared__ __align__(128) unsigned char xs[2][BUF];
  __shared__ float sxs[2][N];
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
  k1 = min(k1, in);
  const int wpr = in / 8, gpr = in / 64;
  // this thread's MMA rows g and g+8 of its warp's 16 (warpgroup w/4 has
  // rows 64·(w/4) ..; warp w%4 of it the 16 from 16·(w%4)); clamped rows are
  // read again and their results dropped
  const int rowa = r0 + (w >> 2) * 64 + (w & 3) * 16 + g, rowb = rowa + 8;
  const int ra = min(rowa, out - 1), rb = min(rowb, out - 1);
  const uint2* Wa = reinterpret_cast<const uint2*>(W + (size_t)ra * wpr) + t;
  const uint2* Wb = reinterpret_cast<const uint2*>(W + (size_t)rb * wpr) + t;
  auto load = [&](int c0, QwCodes& q) {
    const int gi = c0 / 64;
    q.qa = __ldg(Wa + gi * 4);
    q.qb = __ldg(Wb + gi * 4);
    q.sa = __ldg(S + (size_t)ra * gpr + gi);
    q.sb = __ldg(S + (size_t)rb * gpr + gi);
    q.ba = __ldg(B + (size_t)ra * gpr + gi);
    q.bb = __ldg(B + (size_t)rb * gpr + gi);
  };
  // x: the token this thread converts and its first step
  const int xn = N == 64 ? w * 8 + g : w * 4 + (g & 3), s0 = N == 64 ? 0 : 2 * (g >> 2);
  const float* xp = xrow(xn);
  if (xp != nullptr) xp += 16 * t + 4 * s0;
  float4 xr[XF];
  auto loadx = [&](int c0) {
#pragma unroll
    for (int i = 0; i < XF; i++) xr[i] = xp != nullptr ? __ldg(reinterpret_cast<const float4*>(xp + c0) + i) : make_float4(0.f, 0.f, 0.f, 0.f);
  };
  auto stage = [&](int buf) {
    unsigned char* base = xs[buf] + (xn >> 3) * 256 + (xn & 7) * 16 + 4 * t;
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < XF; i++) {
      const int s = s0 + i;
      const float r[4] = {xr[i].x, xr[i].y, xr[i].z, xr[i].w};
      sum += (r[0] + r[1]) + (r[2] + r[3]);
      u32 h[4], l[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        h[e] = bf16_bits(r[e]);
        l[e] = bf16_bits(r[e] - __uint_as_float(h[e] << 16));
      }
      *reinterpret_cast<u32*>(base + s * STEP) = h[0] | (h[1] << 16);
      *reinterpret_cast<u32*>(base + s * STEP + 128) = h[2] | (h[3] << 16);
      *reinterpret_cast<u32*>(base + PART + s * STEP) = l[0] | (l[1] << 16);
      *reinterpret_cast<u32*>(base + PART + s * STEP + 128) = l[2] | (l[3] << 16);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (N == 32) sum += __shfl_xor_sync(0xffffffffu, sum, 16);
    if (t == 0 && (N == 64 || g < 4)) sxs[buf][xn] = sum;
    fence_async_smem();
  };
  float acc[N / 2], tacc[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; i++) acc[i] = tacc[i] = 0.f;
  QwCodes cur, nxt;
  load(k0, cur);
  if (k0 + 64 < k1) load(k0 + 64, nxt);
  loadx(k0);
  stage(0);
  if (k0 + 64 < k1) loadx(k0 + 64);
  __syncthreads();
  const u32 xs0 = (u32)__cvta_generic_to_shared(&xs[0][0]);
  int buf = 0;
  for (int c0 = k0; c0 < k1; c0 += 64, buf ^= 1) {
    u32 a[4][4];
#pragma unroll
    for (int s = 0; s < 4; s++) {
      const int nb = 4 * (s & 1);
      const u32 wa = s < 2 ? cur.qa.x : cur.qa.y, wb = s < 2 ? cur.qb.x : cur.qb.y;
      a[s][0] = q2bf(wa, nb);
      a[s][1] = q2bf(wb, nb);
      a[s][2] = q2bf(wa, nb + 2);
      a[s][3] = q2bf(wb, nb + 2);
    }
    const float fsa = bf16f(cur.sa), fsb = bf16f(cur.sb), fba = bf16f(cur.ba), fbb = bf16f(cur.bb);
#pragma unroll
    for (int i = 0; i < N / 2; i++) wg_reg_fence(tacc[i]);
    wg_fence();
    const u32 bb0 = xs0 + buf * BUF;
#pragma unroll
    for (int p = 0; p < 2; p++)
#pragma unroll
      for (int s = 0; s < 4; s++) wg_mma<N>(tacc, a[s][0], a[s][1], a[s][2], a[s][3], wg_desc(bb0 + p * PART + s * STEP, lbo, sbo), p | s);
    wg_commit();
    // while the tensor cores work: the next chunk's x into the other
    // buffer (its readers finished before the last barrier), and the loads
    // of the chunk after it
    if (c0 + 64 < k1) stage(buf ^ 1);
    if (c0 + 128 < k1) loadx(c0 + 128);
    cur = nxt;
    if (c0 + 128 < k1) load(c0 + 128, nxt);
    wg_wait0();
#pragma unroll
    for (int i = 0; i < N / 2; i++) wg_reg_fence(tacc[i]);
#pragma unroll
    for (int j = 0; j < N / 8; j++) {
      const float x0 = sxs[buf][8 * j + 2 * t], x1 = sxs[buf][8 * j + 2 * t + 1];
      acc[4 * j + 0] = fmaf(fsa, tacc[4 * j + 0], fmaf(fba, x0, acc[4 * j + 0]));
      acc[4 * j + 1] = fmaf(fsa, tacc[4 * j + 1], fmaf(fba, x1, acc[4 * j + 1]));
      acc[4 * j + 2] = fmaf(fsb, tacc[4 * j + 2], fmaf(fbb, x0, acc[4 * j + 2]));
      acc[4 * j + 3] = fmaf(fsb, tacc[4 * j + 3], fmaf(fbb, x1, acc[4 * j + 3]));
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < N / 8; j++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int row = i < 2 ? rowa : rowb;
      if (row < out) put(8 * j + 2 * t + (i & 1), row, acc[4 * j + i]);
    }
#else
  __trap();
#endif
}

// qmmw4: y[T, out] = x·Wᵀ, block (64-token tile, 128-row tile, k split z):
// columns [z·kc, (z+1)·kc) go to y + z·T·out (qgemm_sum adds the splits).
extern "C" __global__ void __launch_bounds__(256, 2) qmmw4(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B,
                                                            const float* __restrict__ x, float* __restrict__ y, int out, int in, int T, int kc,
                                                            int lbo, int sbo) {
  pdl_wait();
  const int n0 = blockIdx.x * 64;
  float* yz = y + (size_t)blockIdx.z * T * out;
  qmmw_tile<64>(
      W, S, B, out, in, blockIdx.y * 128, [&](int i) { return n0 + i < T ? x + (size_t)(n0 + i) * in : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (n0 + i < T) yz[(size_t)(n0 + i) * out + row] = v;
      },
      blockIdx.z * kc, (blockIdx.z + 1) * kc, lbo, sbo);
}

// qmmwe4 / qmmwd4: the grouped prefill experts (qmmae4m2p2_4 / qmmad4m2p2_4,
// kernels_mma.cu: slots of up to 32 pairs, 128 rows a block, the gate/up
// boundary I a multiple of 128) on the warpgroup MMA.
extern "C" __global__ void __launch_bounds__(256, 2) qmmwe4(QMMAE_ARGS, int lbo, int sbo) {
  pdl_wait();
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  const bool up = (int)blockIdx.x * 128 >= I;
  float* dst = up ? ubuf : gbuf;
  qmmw_tile<32>(
      (const u32*)(e + (up ? uw : gw)), (const u16*)(e + (up ? us : gs)), (const u16*)(e + (up ? ub : gb)), I, Hd, blockIdx.x * 128 - (up ? I : 0),
      [&](int i) { return i < n ? x + (size_t)(sl[2 + i] / K) * Hd : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (i < n) dst[(size_t)sl[2 + i] * I + row] = v;
      },
      0, Hd, lbo, sbo);
}

extern "C" __global__ void __launch_bounds__(256, 2) qmmwd4(QMMAD_ARGS, int lbo, int sbo) {
  pdl_wait();
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  qmmw_tile<32>(
      (const u32*)(e + dw), (const u16*)(e + ds), (const u16*)(e + db), Hd, I, blockIdx.x * 128,
      [&](int i) { return i < n ? hbuf + (size_t)sl[2 + i] * I : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (i < n) part[(size_t)sl[2 + i] * Hd + row] = v;
      },
      0, I, lbo, sbo);
}
