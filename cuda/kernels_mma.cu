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
template <int NT, int MT = 1, int P = 3, class XR, class PUT>
__device__ __forceinline__ void qmma_tile(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B, int out, int in,
                                          int r0, XR xrow, PUT put, int k0 = 0, int k1 = 1 << 30) {
  k1 = min(k1, in);
  __shared__ u32 xs[P][8 * NT][QMMA_TS];  // bf16 pairs: part, token, k/2
  __shared__ float sxs[8 * NT][QMMA_KC / 64];
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wpr = in / 8, gpr = in / 64;
  // this thread's rows g and g+8 of each of the warp's MT tiles of 16
  // (clamped: results dropped)
  int ra[MT], rb[MT];
  const uint2 *Wa[MT], *Wb[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) {
    ra[m] = min(r0 + (w * MT + m) * 16 + g, out - 1);
    rb[m] = min(r0 + (w * MT + m) * 16 + g + 8, out - 1);
    Wa[m] = reinterpret_cast<const uint2*>(W + (size_t)ra[m] * wpr) + t;
    Wb[m] = reinterpret_cast<const uint2*>(W + (size_t)rb[m] * wpr) + t;
  }
  float acc[MT][NT][4];
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) acc[m][i][j] = 0.f;
  // codes: per group, 2 words (uint2 #t of the group's 4) of each row
  uint2 qa[MT][2], qb[MT][2];
  u16 sa[MT][2], sb[MT][2], ba[MT][2], bb[MT][2];
  auto load = [&](int c0) {
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int gi = c0 / 64 + h;
        qa[m][h] = __ldg(Wa[m] + gi * 4);
        qb[m][h] = __ldg(Wb[m] + gi * 4);
        sa[m][h] = __ldg(S + (size_t)ra[m] * gpr + gi);
        sb[m][h] = __ldg(S + (size_t)rb[m] * gpr + gi);
        ba[m][h] = __ldg(B + (size_t)ra[m] * gpr + gi);
        bb[m][h] = __ldg(B + (size_t)rb[m] * gpr + gi);
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
      for (int p = 0; p < P; p++) {
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
    uint2 ca[MT][2], cb[MT][2];
    float fsa[MT][2], fsb[MT][2], fba[MT][2], fbb[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        ca[m][h] = qa[m][h]; cb[m][h] = qb[m][h];
        fsa[m][h] = bf16f(sa[m][h]); fsb[m][h] = bf16f(sb[m][h]); fba[m][h] = bf16f(ba[m][h]); fbb[m][h] = bf16f(bb[m][h]);
      }
    if (c0 + QMMA_KC < k1) {
      load(c0 + QMMA_KC);
      loadx(c0 + QMMA_KC);
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float tacc[MT][NT][4];
#pragma unroll
      for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) tacc[m][i][j] = 0.f;
#pragma unroll
      for (int s = 0; s < 4; s++) {
        const int nb = 4 * (s & 1);
        u32 a0[MT], a1[MT], a2[MT], a3[MT];
#pragma unroll
        for (int m = 0; m < MT; m++) {
          const u32 wa = s < 2 ? ca[m][h].x : ca[m][h].y, wb = s < 2 ? cb[m][h].x : cb[m][h].y;
          a0[m] = q2bf(wa, nb); a2[m] = q2bf(wa, nb + 2); a1[m] = q2bf(wb, nb); a3[m] = q2bf(wb, nb + 2);
        }
        const int kw = (h * 64 + 16 * t + 4 * s) / 2;  // u32 word of the 4 x values
        // parts outer, n-tiles inner: consecutive MMAs feed different
        // accumulators (none waits on the previous one's result); each B
        // fragment serves the warp's MT row tiles
#pragma unroll
        for (int p = 0; p < P; p++) {
#pragma unroll
          for (int nt = 0; nt < NT; nt++) {
            const uint2 bv = *reinterpret_cast<const uint2*>(&xs[p][nt * 8 + g][kw]);
#pragma unroll
            for (int m = 0; m < MT; m++) mma_bf16(tacc[m][nt], a0[m], a1[m], a2[m], a3[m], bv.x, bv.y);
          }
        }
      }
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const float x0 = sxs[nt * 8 + 2 * t][h], x1 = sxs[nt * 8 + 2 * t + 1][h];
#pragma unroll
        for (int m = 0; m < MT; m++) {
          acc[m][nt][0] = fmaf(fsa[m][h], tacc[m][nt][0], fmaf(fba[m][h], x0, acc[m][nt][0]));
          acc[m][nt][1] = fmaf(fsa[m][h], tacc[m][nt][1], fmaf(fba[m][h], x1, acc[m][nt][1]));
          acc[m][nt][2] = fmaf(fsb[m][h], tacc[m][nt][2], fmaf(fbb[m][h], x0, acc[m][nt][2]));
          acc[m][nt][3] = fmaf(fsb[m][h], tacc[m][nt][3], fmaf(fbb[m][h], x1, acc[m][nt][3]));
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int row = r0 + (w * MT + m) * 16 + g + (i >= 2 ? 8 : 0);
        if (row < out) put(nt * 8 + 2 * t + (i & 1), row, acc[m][nt][i]);
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

// qmma4m2: qmma4 with two 16-row tiles per warp (128 rows per block): each
// B fragment read from shared memory serves two MMAs, and the x staging is
// shared by twice the rows (QMMAMT = 2, the default). qmma4m2p2: x in two
// bf16 parts (hi + lo: 16 significant bits of each x value, products no
// longer exact; QMMAParts = 2) for two thirds of the MMAs.
#define QMMA4M2(M, P)                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(128) qmma4m2##M(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B, \
                                                               const float* __restrict__ x, float* __restrict__ y, int out, int in, int T, int kc) { \
    pdl_wait();                                                                                                                           \
    const int n0 = blockIdx.y * 32;                                                                                                       \
    float* yz = y + (size_t)blockIdx.z * T * out;                                                                                         \
    qmma_tile<4, 2, P>(                                                                                                                   \
        W, S, B, out, in, blockIdx.x * 128, [&](int i) { return n0 + i < T ? x + (size_t)(n0 + i) * in : (const float*)nullptr; },      \
        [&](int i, int row, float v) {                                                                                                    \
          if (n0 + i < T) yz[(size_t)(n0 + i) * out + row] = v;                                                                           \
        },                                                                                                                                \
        blockIdx.z * kc, (blockIdx.z + 1) * kc);                                                                                          \
  }
QMMA4M2(, 3)
QMMA4M2(p2, 2)

// ---- grouped prefill experts: each routed expert's weights read once per batch ----
//
// moe_slots groups the pairs p = t·K + k of n tokens by expert: slot s =
// (expert, count ≤ cap ≤ 32, the pairs in ascending order); an expert with
// more than cap pairs takes several slots. Layout (ints): [0] = slots, then per
// slot MOE_SLOT ints. One block: the block counts each expert's pairs in
// shared memory (E ints), then warp 0 numbers the slots (a scan over the
// experts, 32 at a time) and places the pairs 32 at a time in order (the
// lanes of one expert ranked by __match_any_sync), so the result is
// deterministic: slots in expert order, pairs ascending.
#define MOE_SLOT 34
extern "C" __global__ void moe_slots(const int* __restrict__ ids, int np, int E, int cap, int* __restrict__ slots) {
  pdl_wait();
  extern __shared__ int cnt[];  // E counts, then E first slots
  int* first = cnt + E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < np; p += blockDim.x) atomicAdd(&cnt[ids[p]], 1);
  __syncthreads();
  if (threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  const unsigned full = 0xffffffffu;
  int base = 0;
  for (int e0 = 0; e0 < E; e0 += 32) {
    const int e = e0 + lane;
    const int c = e < E ? cnt[e] : 0;
    const int ns = (c + cap - 1) / cap;
    int incl = ns;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int v = __shfl_up_sync(full, incl, o);
      if (lane >= o) incl += v;
    }
    const int f = base + incl - ns;
    if (e < E) {
      first[e] = f;
      cnt[e] = 0;
      for (int j = 0; j < ns; j++) {
        slots[1 + (f + j) * MOE_SLOT] = e;
        slots[2 + (f + j) * MOE_SLOT] = min(cap, c - j * cap);
      }
    }
    base += __shfl_sync(full, incl, 31);
  }
  __syncwarp();
  for (int p0 = 0; p0 < np; p0 += 32) {
    const int p = p0 + lane;
    const int e = p < np ? ids[p] : -1;
    const unsigned same = __match_any_sync(full, e);
    const int rank = __popc(same & ((1u << lane) - 1u));
    const int b = p < np ? cnt[e] : 0;
    __syncwarp();  // every lane has read its expert's count
    if (p < np) {
      const int j = b + rank;
      slots[1 + (first[e] + j / cap) * MOE_SLOT + 2 + j % cap] = p;
      if (rank == 0) cnt[e] = b + __popc(same);
    }
    __syncwarp();
  }
  if (lane == 0) slots[0] = base;
}

// qmmae4: gate (row tiles below I) and up projections of slot blockIdx.y's
// expert for its pairs: gb/ub[p·I + r] (x row of pair p: token p / K).
template <int NT, int MT, int P>
__device__ __forceinline__ void qmmae_body(const u64* __restrict__ table, const int* __restrict__ slots, const float* __restrict__ x,
                                                          float* __restrict__ gbuf, float* __restrict__ ubuf, int I, int Hd, int K, long long gw,
                                                          long long gs, long long gb, long long uw, long long us, long long ub) {
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  const bool up = (int)blockIdx.x * 64 * MT >= I;
  float* dst = up ? ubuf : gbuf;
  qmma_tile<NT, MT, P>(
      (const u32*)(e + (up ? uw : gw)), (const u16*)(e + (up ? us : gs)), (const u16*)(e + (up ? ub : gb)), I, Hd, blockIdx.x * 64 * MT - (up ? I : 0),
      [&](int i) { return i < n ? x + (size_t)(sl[2 + i] / K) * Hd : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (i < n) dst[(size_t)sl[2 + i] * I + row] = v;
      });
}

// qmmad4: down projections of slot blockIdx.y's expert: part[p·Hd + r] from
// h[p·I ..].
template <int NT, int MT, int P>
__device__ __forceinline__ void qmmad_body(const u64* __restrict__ table, const int* __restrict__ slots, const float* __restrict__ hbuf,
                                                          float* __restrict__ part, int Hd, int I, long long dw, long long ds, long long db) {
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  qmma_tile<NT, MT, P>(
      (const u32*)(e + dw), (const u16*)(e + ds), (const u16*)(e + db), Hd, I, blockIdx.x * 64 * MT,
      [&](int i) { return i < n ? hbuf + (size_t)sl[2 + i] * I : (const float*)nullptr; },
      [&](int i, int row, float v) {
        if (i < n) part[(size_t)sl[2 + i] * Hd + row] = v;
      });
}

// qmmae4_<NT> / qmmad4_<NT>: slots of up to 8·NT pairs (moe_slots' cap);
// qmmae4m2_<NT> / qmmad4m2_<NT>: two 16-row tiles per warp (128 rows per
// block, as qmma4m2; the gate/up boundary I a multiple of 128).
// qmmae4m2p2_<NT> / qmmad4m2p2_<NT>: the same with x in two bf16 parts (as
// qmma4m2p2).
#define QMMAE_ARGS                                                                                                                     \
  const u64 *table, const int *slots, const float *x, float *gbuf, float *ubuf, int I, int Hd, int K, long long gw, long long gs, \
      long long gb, long long uw, long long us, long long ub
#define QMMAD_ARGS const u64 *table, const int *slots, const float *hbuf, float *part, int Hd, int I, long long dw, long long ds, long long db
#define QMMAXV(NT, MT, M, P)                                                                                                            \
  extern "C" __global__ void __launch_bounds__(128) qmmae4##M##_##NT(QMMAE_ARGS) {                                                    \
    pdl_wait();                                                                                                                         \
    qmmae_body<NT, MT, P>(table, slots, x, gbuf, ubuf, I, Hd, K, gw, gs, gb, uw, us, ub);                                                 \
  }                                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(128) qmmad4##M##_##NT(QMMAD_ARGS) {                                                    \
    pdl_wait();                                                                                                                         \
    qmmad_body<NT, MT, P>(table, slots, hbuf, part, Hd, I, dw, ds, db);                                                                   \
  }
#define QMMAX(NT) QMMAXV(NT, 1, , 3) QMMAXV(NT, 2, m2, 3) QMMAXV(NT, 2, m2p2, 2)
QMMAX(1)
QMMAX(2)
QMMAX(4)
