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

// ---- qmmi: the prefill GEMM on the integer tensor cores ----
//
// qmma_tile's blocks, weight loads and epilogue, with the products on
// mma.sync m16n8k32 (u8 codes × s8 parts of x, int32 sums, exact) as in the
// decode kernel qmxi. x comes quantized once per GEMM (xq8_prep): each
// token's 64-column groups with their own scale (sx = max|x|/127 of the
// group) in three signed 8-bit parts, x ≈ sx·(p0 + p1/128 + p2/128²) (22
// bits below the group's largest value: closer to x than qmma's two bf16
// parts), in the MMA's B fragment order: per token and group, per part, the
// 8 uint2 of slot m·4 + t (m: the group's words 2t (0) or 2t+1 (1); x: the
// even columns of the word, then the odd ones), and per token and group
// (sx/128², Σx). A block copies its chunk of that with cp.async, one chunk
// ahead, into rows of 32 words padded to 40 (a warp's 8-byte reads hit
// distinct banks). Per group and 16×8 tile the parts go into one int32
// accumulator by Horner's rule, C = (C·128 + …): |C| ≤ 64·15·127·128² + … <
// 2³¹. A 32-bit word of 8 codes gives a thread's two A registers with one
// mask and one shift+mask (the even and the odd codes). Then y += s·C·sx/128²
// + b·Σx per group, as qmma_tile.
#define QMMI_TS 40  // words per token row of one part (32 + 8 pad)

// xq8_prep: x [T][in] (row stride ldx floats) into P8 [T][in/64][3][16
// words] and SC [T][in/64] (sx/128², Σx). A warp per 128 columns of a token
// (lane j: columns 4j..4j+3; 16 lanes a group; lanes j, j^1 one code word).
extern "C" __global__ void xq8_prep(const float* __restrict__ x, u32* __restrict__ P8, float2* __restrict__ SC, int T, int in) {
  pdl_wait();
  const int w = threadIdx.x >> 5, j = threadIdx.x & 31, n = blockIdx.y;
  const int ch = blockIdx.x * (blockDim.x >> 5) + w, gpr = in / 64;
  if (ch * 128 >= in) return;
  const float4 v = __ldg(reinterpret_cast<const float4*>(x + (size_t)n * in + ch * 128) + j);
  float s = (v.x + v.y) + (v.z + v.w);
  float mx = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  const int G = ch * 2 + (j >> 4);
  if ((j & 15) == 0) SC[(size_t)n * gpr + G] = make_float2(mx * (1.f / (127.f * 16384.f)), s);
  const float inv = mx > 0.f ? 127.f / mx : 0.f;
  float r[4] = {v.x * inv, v.y * inv, v.z * inv, v.w * inv};
  const int wc = (j >> 1) & 7, slot = (wc & 1) * 4 + (wc >> 1);  // the word's (m, t) in its group
  uint2* dst = reinterpret_cast<uint2*>(P8 + ((size_t)n * gpr + G) * 48);
#pragma unroll
  for (int p = 0; p < 3; p++) {
    int q[4];
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const float rr = rintf(r[e]);
      q[e] = (int)rr;
      r[e] = (r[e] - rr) * 128.f;
    }
    const u32 ev = (u32)(q[0] & 0xff) | ((u32)(q[2] & 0xff) << 8), od = (u32)(q[1] & 0xff) | ((u32)(q[3] & 0xff) << 8);
    const u32 pe = __shfl_xor_sync(0xffffffffu, ev, 1), po = __shfl_xor_sync(0xffffffffu, od, 1);
    if ((j & 1) == 0) dst[p * 8 + slot] = make_uint2(ev | (pe << 16), od | (po << 16));
  }
}

// qmmi_tile: as qmma_tile, with xtok(i) the token of slot i (-1: none) in
// P8/SC (xq8_prep).
template <int NT, int MT, class XT, class PUT>
__device__ __forceinline__ void qmmi_tile(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B, int out, int in,
                                          int r0, XT xtok, PUT put, const u32* __restrict__ P8, const float2* __restrict__ SC, int k0 = 0,
                                          int k1 = 1 << 30) {
  k1 = min(k1, in);
  __shared__ __align__(16) u32 xq[2][3][8 * NT][QMMI_TS];  // two chunks of s8 parts in B fragment order
  __shared__ __align__(16) float2 xs[2][8 * NT][2];        // (sx/128², Σx) per group of the chunk
  __shared__ int tok[8 * NT];
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int wpr = in / 8, gpr = in / 64;
  if (tid < 8 * NT) tok[tid] = xtok(tid);
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
  // stage: chunk c0's parts of every slot's token into buffer b (24 pieces
  // of 16 bytes a token: group, part, quarter), zeros for empty slots
  auto stage = [&](int c0, int b) {
    for (int k = tid; k < 8 * NT * 24; k += blockDim.x) {
      const int i = k / 24, r = k % 24, G = r / 12, p = (r % 12) >> 2, q = r & 3;
      u32* dst = &xq[b][p][i][G * 16 + q * 4];
      const int n = tok[i];
      if (n >= 0) {
        cp_async16(dst, P8 + ((size_t)n * gpr + c0 / 64 + G) * 48 + p * 16 + q * 4);
      } else {
        *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
      }
    }
    for (int i = tid; i < 8 * NT; i += blockDim.x) {
      const int n = tok[i];
      if (n >= 0) {
        cp_async16(&xs[b][i][0], SC + (size_t)n * gpr + c0 / 64);
      } else {
        xs[b][i][0] = xs[b][i][1] = make_float2(0.f, 0.f);
      }
    }
  };
  __syncthreads();  // tok
  load(k0);
  stage(k0, 0);
  cp_async_commit();
  for (int c0 = k0, b = 0; c0 < k1; c0 += QMMA_KC, b ^= 1) {
    __syncthreads();  // the previous chunk's buffer is read
    if (c0 + QMMA_KC < k1) stage(c0 + QMMA_KC, b ^ 1);
    cp_async_commit();
    cp_async_wait1();  // this chunk's group has landed
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
    if (c0 + QMMA_KC < k1) load(c0 + QMMA_KC);
#pragma unroll
    for (int h = 0; h < 2; h++) {
      int c[MT][NT][4];
#pragma unroll
      for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < NT; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) c[m][i][j] = 0;
      u32 a0[MT][2], a1[MT][2], a2[MT][2], a3[MT][2];  // A registers of the group's words 2t, 2t+1
#pragma unroll
      for (int m = 0; m < MT; m++)
#pragma unroll
        for (int k = 0; k < 2; k++) {
          const u32 wa = k ? ca[m][h].y : ca[m][h].x, wb = k ? cb[m][h].y : cb[m][h].x;
          a0[m][k] = wa & 0x0f0f0f0fu; a1[m][k] = wb & 0x0f0f0f0fu; a2[m][k] = (wa >> 4) & 0x0f0f0f0fu; a3[m][k] = (wb >> 4) & 0x0f0f0f0fu;
        }
#pragma unroll
      for (int p = 0; p < 3; p++) {
        if (p > 0) {
#pragma unroll
          for (int m = 0; m < MT; m++)
#pragma unroll
            for (int i = 0; i < NT; i++)
#pragma unroll
              for (int j = 0; j < 4; j++) c[m][i][j] *= 128;
        }
#pragma unroll
        for (int k = 0; k < 2; k++) {
#pragma unroll
          for (int nt = 0; nt < NT; nt++) {
            const uint2 bv = *reinterpret_cast<const uint2*>(&xq[b][p][nt * 8 + g][h * 16 + (k * 4 + t) * 2]);
#pragma unroll
            for (int m = 0; m < MT; m++) imma_u8s8(c[m][nt], a0[m][k], a1[m][k], a2[m][k], a3[m][k], bv.x, bv.y);
          }
        }
      }
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const float2 e0 = xs[b][nt * 8 + 2 * t][h], e1 = xs[b][nt * 8 + 2 * t + 1][h];
#pragma unroll
        for (int m = 0; m < MT; m++) {
          acc[m][nt][0] = fmaf(fsa[m][h], (float)c[m][nt][0] * e0.x, fmaf(fba[m][h], e0.y, acc[m][nt][0]));
          acc[m][nt][1] = fmaf(fsa[m][h], (float)c[m][nt][1] * e1.x, fmaf(fba[m][h], e1.y, acc[m][nt][1]));
          acc[m][nt][2] = fmaf(fsb[m][h], (float)c[m][nt][2] * e0.x, fmaf(fbb[m][h], e0.y, acc[m][nt][2]));
          acc[m][nt][3] = fmaf(fsb[m][h], (float)c[m][nt][3] * e1.x, fmaf(fbb[m][h], e1.y, acc[m][nt][3]));
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

// qmmi4m2: qmma4m2 on the integer tensor cores (qmmi_tile; x through
// xq8_prep into P8, SC).
extern "C" __global__ void __launch_bounds__(128) qmmi4m2(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B,
                                                           const u32* __restrict__ P8, const float2* __restrict__ SC, float* __restrict__ y, int out,
                                                           int in, int T, int kc) {
  pdl_wait();
  const int n0 = blockIdx.y * 32;
  float* yz = y + (size_t)blockIdx.z * T * out;
  qmmi_tile<4, 2>(
      W, S, B, out, in, blockIdx.x * 128, [&](int i) { return n0 + i < T ? n0 + i : -1; },
      [&](int i, int row, float v) {
        if (n0 + i < T) yz[(size_t)(n0 + i) * out + row] = v;
      },
      P8, SC, blockIdx.z * kc, (blockIdx.z + 1) * kc);
}

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
template <int NT, int MT, int P>  // P = 0: qmmi_tile
__device__ __forceinline__ void qmmae_body(const u64* __restrict__ table, const int* __restrict__ slots, const float* __restrict__ x,
                                                          float* __restrict__ gbuf, float* __restrict__ ubuf, int I, int Hd, int K, long long gw,
                                                          long long gs, long long gb, long long uw, long long us, long long ub,
                                                          const u32* __restrict__ P8 = nullptr, const float2* __restrict__ SC = nullptr) {
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  const bool up = (int)blockIdx.x * 64 * MT >= I;
  float* dst = up ? ubuf : gbuf;
  const auto xr = [&](int i) { return i < n ? x + (size_t)(sl[2 + i] / K) * Hd : (const float*)nullptr; };
  const auto put = [&](int i, int row, float v) {
    if (i < n) dst[(size_t)sl[2 + i] * I + row] = v;
  };
  const u32* W = (const u32*)(e + (up ? uw : gw));
  const u16 *S = (const u16*)(e + (up ? us : gs)), *B = (const u16*)(e + (up ? ub : gb));
  if constexpr (P == 0) {
    qmmi_tile<NT, MT>(W, S, B, I, Hd, blockIdx.x * 64 * MT - (up ? I : 0), [&](int i) { return i < n ? sl[2 + i] / K : -1; }, put, P8, SC);
  } else {
    qmma_tile<NT, MT, P>(W, S, B, I, Hd, blockIdx.x * 64 * MT - (up ? I : 0), xr, put);
  }
}

// qmmad4: down projections of slot blockIdx.y's expert: part[p·Hd + r] from
// h[p·I ..].
template <int NT, int MT, int P>
__device__ __forceinline__ void qmmad_body(const u64* __restrict__ table, const int* __restrict__ slots, const float* __restrict__ hbuf,
                                                          float* __restrict__ part, int Hd, int I, long long dw, long long ds, long long db,
                                                          const u32* __restrict__ P8 = nullptr, const float2* __restrict__ SC = nullptr) {
  if ((int)blockIdx.y >= slots[0]) return;
  const int* sl = slots + 1 + blockIdx.y * MOE_SLOT;
  const int n = sl[1];
  const char* e = reinterpret_cast<const char*>(table[sl[0]]);
  const auto xr = [&](int i) { return i < n ? hbuf + (size_t)sl[2 + i] * I : (const float*)nullptr; };
  const auto put = [&](int i, int row, float v) {
    if (i < n) part[(size_t)sl[2 + i] * Hd + row] = v;
  };
  if constexpr (P == 0) {
    qmmi_tile<NT, MT>((const u32*)(e + dw), (const u16*)(e + ds), (const u16*)(e + db), Hd, I, blockIdx.x * 64 * MT,
                      [&](int i) { return i < n ? sl[2 + i] : -1; }, put, P8, SC);
  } else {
    qmma_tile<NT, MT, P>((const u32*)(e + dw), (const u16*)(e + ds), (const u16*)(e + db), Hd, I, blockIdx.x * 64 * MT, xr, put);
  }
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
// qmmae4m2i_<NT> / qmmad4m2i_<NT>: on the integer tensor cores (qmmi_tile;
// x, h through xq8_prep into P8, SC).
#define QMMAXI(NT)                                                                                                                      \
  extern "C" __global__ void __launch_bounds__(128) qmmae4m2i_##NT(QMMAE_ARGS, const u32* P8, const float2* SC) {                   \
    pdl_wait();                                                                                                                         \
    qmmae_body<NT, 2, 0>(table, slots, x, gbuf, ubuf, I, Hd, K, gw, gs, gb, uw, us, ub, P8, SC);                                          \
  }                                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(128) qmmad4m2i_##NT(QMMAD_ARGS, const u32* P8, const float2* SC) {                   \
    pdl_wait();                                                                                                                         \
    qmmad_body<NT, 2, 0>(table, slots, hbuf, part, Hd, I, dw, ds, db, P8, SC);                                                            \
  }
#define QMMAX(NT) QMMAXV(NT, 1, , 3) QMMAXV(NT, 2, m2, 3) QMMAXV(NT, 2, m2p2, 2) QMMAXI(NT)
QMMAX(1)
QMMAX(2)
QMMAX(4)
