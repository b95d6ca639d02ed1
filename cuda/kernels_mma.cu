// ---- qmma: prefill GEMM of 4-bit weights on the tensor cores ----
//
// y[T, out] = x[T, in]·Wᵀ for MLX affine 4-bit weights in groups of 64
// columns, within float32 rounding of the CUDA-core kernels: per group g of
// a row, Σ_k w_k·x_k = s_g·Σ_k q_k·x_k + b_g·Σ_k x_k, where the codes q_k
// (0..15) are exact in bf16 and x is split into three bf16 parts
// (x = hi + mid + lo, 24 bits of mantissa), so every product on the tensor
// cores is exact and only the float32 accumulation rounds. Per group the
// mma.sync m16n8k16 products (codes as A: rows × k; x parts as B: k ×
// tokens) go to a fresh accumulator that is then scaled into the result.
//
// The k order inside a group is permuted (a dot product does not care): in
// each 16-wide MMA step s, lane quad thread t holds the logical k {2t, 2t+1,
// 2t+8, 2t+9} of A and B; they are the physical columns 16t + 4s + {0..3}, so
// a thread reads 16 consecutive codes of a row (two u32 words) for the whole
// group, and 4 consecutive x values of a token per step.
//
// Block (qmma_tile): 4 warps, 64 rows (16 a warp) × 32 tokens (4 MMA n-tiles), k in
// chunks of 128 columns (2 groups). Per chunk the block converts x (float32,
// read once) into the three bf16 parts in shared memory, with each group's
// Σx; token rows are padded to 66 words so that a warp's 8-byte fragment
// reads hit distinct banks. The next chunk's codes, scales and biases are
// loaded into registers before the current chunk is computed.
#define QMMA_KC 128
#define QMMA_TS (QMMA_KC / 2 + 2)  // u32 words per token row of one part

__device__ __forceinline__ u32 bf16_bits(float f) {  // round to nearest even (finite f)
  const u32 u = __float_as_uint(f);
  return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

// mma_bf16: c += a·b (m16n8k16, bf16 in, float32 accumulate).
__device__ __forceinline__ void mma_bf16(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// q2bf: the 4-bit codes at nibbles n and n+1 of w as two bf16 integers.
__device__ __forceinline__ u32 q2bf(u32 w, int n) {
  const u32 v = ((w >> (4 * n)) & 0xfu) | (((w >> (4 * n + 4)) & 0xfu) << 16);
  u32 d;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // (128 + q)·1 − 128, exact: 0x43 is the bf16 exponent of 128 (ulp 1)
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(v | 0x43004300u), "r"(0x3f803f80u), "r"(0xc300c300u));
#else
  d = v;
#endif
  return d;
}

// qmma_tile: the block's 64 rows from r0 of W (rows out, in columns) times
// up to 32 token rows: xrow(i) is token slot i's x (nullptr: zeros), put(i,
// row, v) stores a result (rows ≥ out are not passed).
template <int NT, class XR, class PUT>
__device__ __forceinline__ void qmma_tile(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B, int out, int in,
                                          int r0, XR xrow, PUT put, int k0 = 0, int k1 = 1 << 30) {
  k1 = min(k1, in);
  __shared__ u32 xs[3][8 * NT][QMMA_TS];  // bf16 pairs: part, token, k/2
  __shared__ float sxs[8 * NT][QMMA_KC / 64];
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wpr = in / 8, gpr = in / 64;
  // this thread's rows g and g+8 of the warp's 16 (clamped: results dropped)
  const int ra = min(r0 + w * 16 + g, out - 1), rb = min(r0 + w * 16 + g + 8, out - 1);
  const uint2* Wa = reinterpret_cast<const uint2*>(W + (size_t)ra * wpr) + t;
  const uint2* Wb = reinterpret_cast<const uint2*>(W + (size_t)rb * wpr) + t;
  float acc[NT][4];
#pragma unroll
  for (int i = 0; i < NT; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
  // codes: per group, 2 words (uint2 #t of the group's 4) of each row
  uint2 qa[2], qb[2];
  u16 sa[2], sb[2], ba[2], bb[2];
  auto load = [&](int c0) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int gi = c0 / 64 + h;
      qa[h] = __ldg(Wa + gi * 4);
      qb[h] = __ldg(Wb + gi * 4);
      sa[h] = __ldg(S + (size_t)ra * gpr + gi);
      sb[h] = __ldg(S + (size_t)rb * gpr + gi);
      ba[h] = __ldg(B + (size_t)ra * gpr + gi);
      bb[h] = __ldg(B + (size_t)rb * gpr + gi);
    }
  };
  // x: float4 #lane of token slot it·4 + w of a chunk, 8 per thread
  const float* xp[2 * NT];
#pragma unroll
  for (int it = 0; it < 2 * NT; it++) xp[it] = xrow(it * 4 + w);
  float4 xr[2 * NT];
  auto loadx = [&](int c0) {
#pragma unroll
    for (int it = 0; it < 2 * NT; it++)
      xr[it] = xp[it] != nullptr ? __ldg(reinterpret_cast<const float4*>(xp[it] + c0) + lane) : make_float4(0.f, 0.f, 0.f, 0.f);
  };
  load(k0);
  loadx(k0);
  for (int c0 = k0; c0 < k1; c0 += QMMA_KC) {
    __syncthreads();  // the previous chunk's parts are read
    // stage x: token slot tk's float4 #lane of the chunk (a warp = one token row)
#pragma unroll
    for (int it = 0; it < 2 * NT; it++) {
      const int tk = it * 4 + w, j = lane;
      const float4 v = xr[it];
      float s = (v.x + v.y) + (v.z + v.w);
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);  // 16 lanes = one group
      if ((j & 15) == 0) sxs[tk][j >> 4] = s;
      float r[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int p = 0; p < 3; p++) {
        u32 hbits[4];
#pragma unroll
        for (int e = 0; e < 4; e++) {
          hbits[e] = bf16_bits(r[e]);
          r[e] -= __uint_as_float(hbits[e] << 16);
        }
        *reinterpret_cast<uint2*>(&xs[p][tk][2 * j]) = make_uint2(hbits[0] | (hbits[1] << 16), hbits[2] | (hbits[3] << 16));
      }
    }
    __syncthreads();
    uint2 ca[2] = {qa[0], qa[1]}, cb[2] = {qb[0], qb[1]};
    float fsa[2], fsb[2], fba[2], fbb[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      fsa[h] = bf16f(sa[h]); fsb[h] = bf16f(sb[h]); fba[h] = bf16f(ba[h]); fbb[h] = bf16f(bb[h]);
    }
    if (c0 + QMMA_KC < k1) {
      load(c0 + QMMA_KC);
      loadx(c0 + QMMA_KC);
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float tacc[NT][4];
#pragma unroll
      for (int i = 0; i < NT; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) tacc[i][j] = 0.f;
#pragma unroll
      for (int s = 0; s < 4; s++) {
        const u32 wa = s < 2 ? ca[h].x : ca[h].y, wb = s < 2 ? cb[h].x : cb[h].y;
        const int nb = 4 * (s & 1);
        const u32 a0 = q2bf(wa, nb), a2 = q2bf(wa, nb + 2), a1 = q2bf(wb, nb), a3 = q2bf(wb, nb + 2);
        const int kw = (h * 64 + 16 * t + 4 * s) / 2;  // u32 word of the 4 x values
        // parts outer, n-tiles inner: consecutive MMAs feed different
        // accumulators (none waits on the previous one's result)
#pragma unroll
        for (int p = 0; p < 3; p++) {
#pragma unroll
          for (int nt = 0; nt < NT; nt++) {
            const uint2 bv = *reinterpret_cast<const uint2*>(&xs[p][nt * 8 + g][kw]);
            mma_bf16(tacc[nt], a0, a1, a2, a3, bv.x, bv.y);
          }
        }
      }
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const float x0 = sxs[nt * 8 + 2 * t][h], x1 = sxs[nt * 8 + 2 * t + 1][h];
        acc[nt][0] = fmaf(fsa[h], tacc[nt][0], fmaf(fba[h], x0, acc[nt][0]));
        acc[nt][1] = fmaf(fsa[h], tacc[nt][1], fmaf(fba[h], x1, acc[nt][1]));
        acc[nt][2] = fmaf(fsb[h], tacc[nt][2], fmaf(fbb[h], x0, acc[nt][2]));
        acc[nt][3] = fmaf(fsb[h], tacc[nt][3], fmaf(fbb[h], x1, acc[nt][3]));
      }
    }
  }
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int row = r0 + w * 16 + g + (i >= 2 ? 8 : 0);
      if (row < out) put(nt * 8 + 2 * t + (i & 1), row, acc[nt][i]);
    }
  }
}

// qmma4: y[T, out] = x·Wᵀ, block (row tile, 32-token tile, k split z):
// columns [z·kc, (z+1)·kc) go to y + z·T·out (qgemm_sum adds the splits).
extern "C" __global__ void __launch_bounds__(128) qmma4(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B,
                                                         const float* __restrict__ x, float* __restrict__ y, int out, int in, int T, int kc) {
  pdl_wait();
  const int n0 = blockIdx.y * 32;
  float* yz = y + (size_t)blockIdx.z * T * out;
  qmma_tile<4>(
      W, S, B, out, in, blockIdx.x * 64, [&](int i) { return n0 + i < T ? x + (size_t)(n0 + i) * in : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (n0 + i < T) yz[(size_t)(n0 + i) * out + row] = v;
      },
      blockIdx.z * kc, (blockIdx.z + 1) * kc);
}

// ---- grouped prefill experts: each routed expert's weights read once per batch ----
//
// moe_slots groups the pairs p = t·K + k of n tokens by expert: slot s =
// (expert, count ≤ cap ≤ 32, the pairs in ascending order); an expert with
// more than cap pairs takes several slots. Layout (ints): [0] = slots, then per
// slot MOE_SLOT ints. One block; the expert counts in shared memory (E
// ints). Deterministic: slots in expert order, pairs ascending.
#define MOE_SLOT 34
extern "C" __global__ void moe_slots(const int* __restrict__ ids, int np, int E, int cap, int* __restrict__ slots) {
  pdl_wait();
  extern __shared__ int cnt[];  // E counts, then E first slots
  int* first = cnt + E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < np; p += blockDim.x) atomicAdd(&cnt[ids[p]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int ns = 0;
    for (int e = 0; e < E; e++) {
      first[e] = ns;
      const int c = cnt[e];
      for (int j = 0; j < c; j += cap) {
        slots[1 + ns * MOE_SLOT] = e;
        slots[2 + ns * MOE_SLOT] = min(cap, c - j);
        ns++;
      }
      cnt[e] = 0;
    }
    for (int p = 0; p < np; p++) {
      const int e = ids[p], j = cnt[e]++;
      slots[1 + (first[e] + j / cap) * MOE_SLOT + 2 + j % cap] = p;
    }
    slots[0] = ns;
  }
}

// qmmae4: gate (row tiles below I) and up projections of slot blockIdx.y's
// expert for its pairs: gb/ub[p·I + r] (x row of pair p: token p / K).
template <int NT>
__device__ __forceinline__ void qmmae_body(const u64* __restrict__ table, const int* __restrict__ slots, const float* __restrict__ x,
                                                          float* __restrict__ gbuf, float* __restrict__ ubuf, int I, int Hd, int K, long long gw,
                                                          long long gs, long long gb, long long uw, long long us, long long ub) {
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  const bool up = (int)blockIdx.x * 64 >= I;
  float* dst = up ? ubuf : gbuf;
  qmma_tile<NT>(
      (const u32*)(e + (up ? uw : gw)), (const u16*)(e + (up ? us : gs)), (const u16*)(e + (up ? ub : gb)), I, Hd, blockIdx.x * 64 - (up ? I : 0),
      [&](int i) { return i < n ? x + (size_t)(sl[2 + i] / K) * Hd : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (i < n) dst[(size_t)sl[2 + i] * I + row] = v;
      });
}

// qmmad4: down projections of slot blockIdx.y's expert: part[p·Hd + r] from
// h[p·I ..].
template <int NT>
__device__ __forceinline__ void qmmad_body(const u64* __restrict__ table, const int* __restrict__ slots, const float* __restrict__ hbuf,
                                                          float* __restrict__ part, int Hd, int I, long long dw, long long ds, long long db) {
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  qmma_tile<NT>(
      (const u32*)(e + dw), (const u16*)(e + ds), (const u16*)(e + db), Hd, I, blockIdx.x * 64,
      [&](int i) { return i < n ? hbuf + (size_t)sl[2 + i] * I : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (i < n) part[(size_t)sl[2 + i] * Hd + row] = v;
      });
}

// qmmae4_<NT> / qmmad4_<NT>: slots of up to 8·NT pairs (moe_slots' cap).
#define QMMAE_ARGS                                                                                                                     \
  const u64 *table, const int *slots, const float *x, float *gbuf, float *ubuf, int I, int Hd, int K, long long gw, long long gs, \
      long long gb, long long uw, long long us, long long ub
#define QMMAD_ARGS const u64 *table, const int *slots, const float *hbuf, float *part, int Hd, int I, long long dw, long long ds, long long db
#define QMMAX(NT)                                                                                                                       \
  extern "C" __global__ void __launch_bounds__(128) qmmae4_##NT(QMMAE_ARGS) {                                                         \
    pdl_wait();                                                                                                                         \
    qmmae_body<NT>(table, slots, x, gbuf, ubuf, I, Hd, K, gw, gs, gb, uw, us, ub);                                                     \
  }                                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(128) qmmad4_##NT(QMMAD_ARGS) {                                                         \
    pdl_wait();                                                                                                                         \
    qmmad_body<NT>(table, slots, hbuf, part, Hd, I, dw, ds, db);                                                                       \
  }
QMMAX(1)
QMMAX(2)
QMMAX(4)

// ---- qmmb: qmma with x split once per GEMM, codes expanded by one LOP3 ----
//
// qmma_tile spends most of its instructions staging x: every block of 64
// rows converts the same token rows into the three bf16 parts in shared
// memory (about two thirds of its issue slots at 32 tokens), and each pair
// of codes takes seven more to become a bf16x2 operand. qmmb splits x once
// (xsplit, below) into global memory; the blocks copy their chunks of it
// into shared memory with cp.async (double-buffered: the next chunk's copy
// runs during the current chunk's MMAs) and read the B fragments as
// qmma_tile does. (Loading the fragments straight from global memory, one
// 16-column step ahead, was slower than qmma: 114 against 98 µs at 32
// tokens, every warp waiting on L1.)
// The columns are permuted within each 8-column block of a code word, x'[8i
// + 2m] = x[8i + m] and x'[8i + 2m + 1] = x[8i + m + 4] (m < 4), so that the
// nibble pair (m, m + 4) of a word, 16 bits apart, is one bf16x2 operand:
// (w >> 4m) & 0x000f000f | 0x43004300 is (128 + q_m, 128 + q_{m+4}), and one
// bf16x2 FMA takes the 128 off (exact).

// xsplit: n rows of x (in columns, in % 64 == 0) into the three bf16 parts
// (x = hi + mid + lo) of the permuted row, part p of row r at xp + (p·n +
// r)·in (u16), and Σx of each 64-column group at xs[r·(in/64) + g]. One
// thread per 8-column block.
extern "C" __global__ void xsplit(const float* __restrict__ x, u16* __restrict__ xp, float* __restrict__ xs, int n, int in) {
  pdl_wait();
  const int nb = in / 8;
  const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const bool ok = i < (long long)n * nb;  // whole groups of 8 threads: n·nb and the block size are multiples of 8
  const int r = ok ? (int)(i / nb) : 0, c8 = ok ? (int)(i % nb) : 0;
  float v[8];
  if (ok) {
    const float4* p = reinterpret_cast<const float4*>(x + (size_t)r * in + (size_t)c8 * 8);
    const float4 a = __ldg(p), b = __ldg(p + 1);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
  } else {
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = 0.f;
  }
  float s = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
  s += __shfl_xor_sync(0xffffffffu, s, 1);
  s += __shfl_xor_sync(0xffffffffu, s, 2);
  s += __shfl_xor_sync(0xffffffffu, s, 4);
  if (!ok) return;
  if ((c8 & 7) == 0) xs[(size_t)r * (in / 64) + c8 / 8] = s;
#pragma unroll
  for (int p = 0; p < 3; p++) {
    u32 h[8];
#pragma unroll
    for (int m = 0; m < 4; m++) {  // permuted: x'[2m] = v[m], x'[2m+1] = v[m+4]
      h[2 * m] = bf16_bits(v[m]);
      h[2 * m + 1] = bf16_bits(v[m + 4]);
      v[m] -= __uint_as_float(h[2 * m] << 16);
      v[m + 4] -= __uint_as_float(h[2 * m + 1] << 16);
    }
    *reinterpret_cast<uint4*>(xp + ((size_t)p * n + r) * in + (size_t)c8 * 8) =
        make_uint4(h[0] | (h[1] << 16), h[2] | (h[3] << 16), h[4] | (h[5] << 16), h[6] | (h[7] << 16));
  }
}

// qb2bf: the nibble pair (m, m + 4) of w as the bf16 integers (q_m, q_{m+4}).
__device__ __forceinline__ u32 qb2bf(u32 w, int m) {
  const u32 v = ((w >> (4 * m)) & 0x000f000fu) | 0x43004300u;
  u32 d;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(v), "r"(0x3f803f80u), "r"(0xc300c300u));
#else
  d = v;
#endif
  return d;
}

// cp_async8: copy 8 bytes from global src to shared dst, or zeros when !ok
// (src-size 0). (8, not 16: the padded token rows of QMMA_TS words are
// 8-byte aligned only.)
__device__ __forceinline__ void cp_async8(void* dst, const void* src, bool ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(d), "l"(src), "r"(ok ? 8 : 0) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// qmmb_smem: qmmb_tile's dynamic shared memory for NT n-tiles (two
// buffers of three parts of 8·NT token rows of a chunk).
#define QMMB_SMEM(NT) (2 * 3 * 8 * (NT) * QMMA_TS * 4)

// qmmb_tile: qmma_tile's result (same rows, tokens, k range and fragment
// arithmetic) with x from xsplit of n rows: xidx(i) is the split row of
// token slot i (< 0: zeros). Dynamic shared memory: QMMB_SMEM(NT).
template <int NT, class XI, class PUT>
__device__ __forceinline__ void qmmb_tile(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B, int out, int in,
                                          int r0, const u16* __restrict__ xp, const float* __restrict__ xs, int n, XI xidx, PUT put,
                                          int k0 = 0, int k1 = 1 << 30) {
  extern __shared__ __align__(16) u32 xsm[];  // [buffer][part][token slot][QMMA_TS]
  __shared__ int rows[8 * NT];
  constexpr int BUF = 3 * 8 * NT * QMMA_TS;
  k1 = min(k1, in);
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wpr = in / 8, gpr = in / 64;
  if (tid < 8 * NT) rows[tid] = xidx(tid);
  __syncthreads();
  const int ra = min(r0 + w * 16 + g, out - 1), rb = min(r0 + w * 16 + g + 8, out - 1);
  const uint2* Wa = reinterpret_cast<const uint2*>(W + (size_t)ra * wpr) + t;
  const uint2* Wb = reinterpret_cast<const uint2*>(W + (size_t)rb * wpr) + t;
  const float *s0[NT], *s1[NT];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
    const int j0 = rows[nt * 8 + 2 * t], j1 = rows[nt * 8 + 2 * t + 1];
    s0[nt] = j0 >= 0 ? xs + (size_t)j0 * gpr : nullptr;
    s1[nt] = j1 >= 0 ? xs + (size_t)j1 * gpr : nullptr;
  }
  // a chunk's copy: 3 parts × 8·NT rows × 32 pieces of 8 bytes, 6·NT per thread
  // (warp w copies rows w, w + 4, …, lane = piece; not unrolled, so that
  // the rows' addresses are not all held in registers)
  auto copyx = [&](int c0, int buf) {
#pragma unroll 1
    for (int i = w; i < 8 * NT; i += 4) {
      const int r = rows[i];
      const u16* src = xp + (size_t)max(r, 0) * in + c0 + 4 * lane;
      u32* dst = &xsm[buf * BUF + i * QMMA_TS + 2 * lane];
#pragma unroll
      for (int p = 0; p < 3; p++) cp_async8(dst + p * 8 * NT * QMMA_TS, src + (size_t)p * n * in, r >= 0);
    }
    cp_async_commit();
  };
  float acc[NT][4];
#pragma unroll
  for (int i = 0; i < NT; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
  uint2 qa[2], qb[2];
  u16 sa[2], sb[2], ba[2], bb[2];
  auto load = [&](int c0) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int gi = c0 / 64 + h;
      qa[h] = __ldg(Wa + gi * 4);
      qb[h] = __ldg(Wb + gi * 4);
      sa[h] = __ldg(S + (size_t)ra * gpr + gi);
      sb[h] = __ldg(S + (size_t)rb * gpr + gi);
      ba[h] = __ldg(B + (size_t)ra * gpr + gi);
      bb[h] = __ldg(B + (size_t)rb * gpr + gi);
    }
  };
  load(k0);
  copyx(k0, 0);
  int buf = 0;
  for (int c0 = k0; c0 < k1; c0 += QMMA_KC, buf ^= 1) {
    uint2 ca[2] = {qa[0], qa[1]}, cb[2] = {qb[0], qb[1]};
    float fsa[2], fsb[2], fba[2], fbb[2], x0[2][NT], x1[2][NT];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      fsa[h] = bf16f(sa[h]); fsb[h] = bf16f(sb[h]); fba[h] = bf16f(ba[h]); fbb[h] = bf16f(bb[h]);
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        x0[h][nt] = s0[nt] != nullptr ? __ldg(s0[nt] + c0 / 64 + h) : 0.f;
        x1[h][nt] = s1[nt] != nullptr ? __ldg(s1[nt] + c0 / 64 + h) : 0.f;
      }
    }
    if (c0 + QMMA_KC < k1) {
      load(c0 + QMMA_KC);
      copyx(c0 + QMMA_KC, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this chunk's x is in xsm[buf]
    const u32* xb = xsm + buf * BUF;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float tacc[NT][4];
#pragma unroll
      for (int i = 0; i < NT; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) tacc[i][j] = 0.f;
#pragma unroll
      for (int s = 0; s < 4; s++) {
        const u32 wa = s < 2 ? ca[h].x : ca[h].y, wb = s < 2 ? cb[h].x : cb[h].y;
        const int m0 = 2 * (s & 1);
        const u32 a0 = qb2bf(wa, m0), a2 = qb2bf(wa, m0 + 1), a1 = qb2bf(wb, m0), a3 = qb2bf(wb, m0 + 1);
        const int kw = (h * 64 + 16 * t + 4 * s) / 2;
#pragma unroll
        for (int p = 0; p < 3; p++) {
#pragma unroll
          for (int nt = 0; nt < NT; nt++) {
            const uint2 bv = *reinterpret_cast<const uint2*>(&xb[(p * 8 * NT + nt * 8 + g) * QMMA_TS + kw]);
            mma_bf16(tacc[nt], a0, a1, a2, a3, bv.x, bv.y);
          }
        }
      }
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        acc[nt][0] = fmaf(fsa[h], tacc[nt][0], fmaf(fba[h], x0[h][nt], acc[nt][0]));
        acc[nt][1] = fmaf(fsa[h], tacc[nt][1], fmaf(fba[h], x1[h][nt], acc[nt][1]));
        acc[nt][2] = fmaf(fsb[h], tacc[nt][2], fmaf(fbb[h], x0[h][nt], acc[nt][2]));
        acc[nt][3] = fmaf(fsb[h], tacc[nt][3], fmaf(fbb[h], x1[h][nt], acc[nt][3]));
      }
    }
    __syncthreads();  // xsm[buf] is read: the next iteration's copy may overwrite it
  }
#pragma unroll
  for (int nt = 0; nt < NT; nt++) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int row = r0 + w * 16 + g + (i >= 2 ? 8 : 0);
      if (row < out) put(nt * 8 + 2 * t + (i & 1), row, acc[nt][i]);
    }
  }
}

// qmmb4: qmma4 with x split (xsplit of the T rows): block (row tile,
// 32-token tile, k split z), columns [z·kc, (z+1)·kc) to y + z·T·out.
extern "C" __global__ void __launch_bounds__(128, 3) qmmb4(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B,
                                                         const u16* __restrict__ xp, const float* __restrict__ xs, float* __restrict__ y, int out,
                                                         int in, int T, int kc) {
  pdl_wait();
  const int n0 = blockIdx.y * 32;
  float* yz = y + (size_t)blockIdx.z * T * out;
  qmmb_tile<4>(
      W, S, B, out, in, blockIdx.x * 64, xp, xs, T, [&](int i) { return n0 + i < T ? n0 + i : -1; },
      [&](int i, int row, float v) {
        if (n0 + i < T) yz[(size_t)(n0 + i) * out + row] = v;
      },
      blockIdx.z * kc, (blockIdx.z + 1) * kc);
}

// qmmbe4_<NT> / qmmbd4_<NT>: qmmae4 / qmmad4 with x split: the gate and up
// projections read the n tokens' split rows (xp, xs: n rows of Hd), the
// down projections the pairs' split h rows (hp, hs: np rows of I).
#define QMMBE_ARGS                                                                                                                      \
  const u64 *table, const int *slots, const u16 *xp, const float *xs, int n, float *gbuf, float *ubuf, int I, int Hd, int K,          \
      long long gw, long long gs, long long gb, long long uw, long long us, long long ub
#define QMMBD_ARGS                                                                                                                      \
  const u64 *table, const int *slots, const u16 *hp, const float *hs, int np, float *part, int Hd, int I, long long dw, long long ds, \
      long long db
#define QMMBX(NT)                                                                                                                       \
  extern "C" __global__ void __launch_bounds__(128, 3) qmmbe4_##NT(QMMBE_ARGS) {                                                         \
    pdl_wait();                                                                                                                         \
    if ((int)blockIdx.y >= slots[0]) return;                                                                                            \
    const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;                                                                                  \
    const int c = sl[1];                                                                                                                \
    const char* e = reinterpret_cast<const char*>(table[sl[0]]);                                                                        \
    const bool up = (int)blockIdx.x * 64 >= I;                                                                                          \
    float* dst = up ? ubuf : gbuf;                                                                                                      \
    qmmb_tile<NT>((const u32*)(e + (up ? uw : gw)), (const u16*)(e + (up ? us : gs)), (const u16*)(e + (up ? ub : gb)), I, Hd,          \
                  blockIdx.x * 64 - (up ? I : 0), xp, xs, n, [&](int i) { return i < c ? sl[2 + i] / K : -1; },                          \
                  [&](int i, int row, float v) {                                                                                        \
                    if (i < c) dst[(size_t)sl[2 + i] * I + row] = v;                                                                    \
                  });                                                                                                                   \
  }                                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(128, 3) qmmbd4_##NT(QMMBD_ARGS) {                                                         \
    pdl_wait();                                                                                                                         \
    if ((int)blockIdx.y >= slots[0]) return;                                                                                            \
    const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;                                                                                  \
    const int c = sl[1];                                                                                                                \
    const char* e = reinterpret_cast<const char*>(table[sl[0]]);                                                                        \
    qmmb_tile<NT>((const u32*)(e + dw), (const u16*)(e + ds), (const u16*)(e + db), Hd, I, blockIdx.x * 64, hp, hs, np,                 \
                  [&](int i) { return i < c ? sl[2 + i] : -1; },                                                                        \
                  [&](int i, int row, float v) {                                                                                        \
                    if (i < c) part[(size_t)sl[2 + i] * Hd + row] = v;                                                                  \
                  });                                                                                                                   \
  }
QMMBX(1)
QMMBX(2)
QMMBX(4)
