// ---- fast paths: decode matvec, tiled prefill GEMM, batched MoE ----
//
// Code → float without conversion instructions: a BITS-bit code q placed in
// the top mantissa bits of 1.0f gives f = 1 + q·2^-BITS exactly (one shift,
// one LOP3). Over one chunk of codes sharing a group, Σ q·x = 2^BITS·(Σ f·x −
// Σ x), so a row's contribution is s·2^BITS·Σf·x + (b − s·2^BITS)·Σx: three
// instructions per code (shift, lop, fma) instead of five.

// codef returns 1 + q·2^-BITS for code k of w (k a constant after unrolling).
template <int BITS>
__device__ __forceinline__ float codef(u32 w, int k) {
  const int sh = 23 - BITS - k * BITS;  // move code k to bits 23-BITS..22
  constexpr u32 M = ((1u << BITS) - 1u) << (23 - BITS);
  const u32 v = sh >= 0 ? (w << sh) : (w >> -sh);
  return __uint_as_float((v & M) | 0x3F800000u);
}

// Code → float with one LOP per code (FMOE_DQ = 1, Options.MaskDequant): a BITS-bit
// code q masked in place at bits p..p+BITS-1 (p + BITS ≤ 24) is, read as a
// float, q·2^(p−149) exactly: a subnormal (or, for bits 20-23, the smallest
// normals, whose encoding continues the subnormals' linearly). Codes in the
// top byte are masked from w >> 8 (one shift per word). x is prescaled once
// per chunk by 2^(149−p−DQ_E), shared by all rows, so each product is q·x·2^−DQ_E
// and Σ q·x needs no cancellation (the 1 + q·2^−BITS form above subtracts Σx).
// FMA handles subnormal operands at full rate; the kernels are built without
// flush-to-zero (no --use_fast_math). FMOE_DQ = 0 (the default build) keeps
// the three-instruction form: on an H200 the decode matvecs are bound by
// memory latency and occupancy, not by issue (ncu: SM 32% busy, DRAM 40%),
// and the whole-model decode was not faster with FMOE_DQ = 1.
#ifndef FMOE_DQ
#define FMOE_DQ 0
#endif
#define DQ_E 80
template <int BITS>
__device__ __forceinline__ constexpr bool dq_low(int k) { return k * BITS + BITS <= 24; }
template <int BITS>
__device__ __forceinline__ constexpr int dq_pos(int k) { return dq_low<BITS>(k) ? k * BITS : k * BITS - 8; }
// dq_code: code k of w as q·2^(dq_pos−149); w8 = w >> 8.
template <int BITS>
__device__ __forceinline__ float dq_code(u32 w, u32 w8, int k) {
  constexpr u32 M = (1u << BITS) - 1u;
  return __uint_as_float((dq_low<BITS>(k) ? w : w8) & (M << dq_pos<BITS>(k)));
}
// dq_xs: the factor 2^(149 − dq_pos − DQ_E) for the x of code k.
template <int BITS>
__device__ __forceinline__ float dq_xs(int k) { return __int_as_float((127 + 149 - DQ_E - dq_pos<BITS>(k)) << 23); }
#define DQ_UNSCALE (__int_as_float((127 + DQ_E) << 23))

// qmv: decode matvec y[r] = W[r]·x for one token. One warp per R rows; each
// lane takes U chunks of four words (128-bit loads) per iteration, so R·U
// independent 16-byte loads are in flight per thread. Needs vecOK (the row is
// whole chunks, a chunk lies in one group). The rows' pointers come from
// rowp (so MoE can mix gate and up rows of any expert).
// The lane starts at chunk cstart and steps by cstride (32 for a warp that
// owns whole rows; 32·warps when the warps of a block split the columns).
// NRM: x is replaced by x⊙nw and ss accumulates x² over the chunks read (the
// caller scales the sums by the RMSNorm factor once the block's ss is known).
template <int BITS, int R, int U, bool NRM = false>
__device__ __forceinline__ void qmv_rows(const u32* const (&wr)[R], const u16* const (&sr)[R], const u16* const (&br)[R],
                                         int in, int group, const float* __restrict__ x, float (&acc)[R],
                                         int cstart, int cstride, const float* __restrict__ nw = nullptr, float* ss = nullptr) {
  constexpr int PER = 32 / BITS;
  constexpr float SC = (float)(1 << BITS);
  const int nchunks = in / (4 * PER);
  for (int c0 = cstart; c0 < nchunks; c0 += cstride * U) {
    uint4 q[U][R];
    u16 sv[U][R], bv[U][R];  // the chunk's scale and bias, loaded with its codes (one memory latency per chunk)
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int c = c0 + cstride * u;
      const int g = c * 4 * PER / group;
#pragma unroll
      for (int r = 0; r < R; r++) {
        q[u][r] = c < nchunks ? __ldg(reinterpret_cast<const uint4*>(wr[r]) + c) : make_uint4(0, 0, 0, 0);
        sv[u][r] = c < nchunks ? __ldg(sr[r] + g) : (u16)0;
        bv[u][r] = c < nchunks ? __ldg(br[r] + g) : (u16)0;
      }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int c = c0 + cstride * u;
      if (c < nchunks) {
        const int col0 = c * 4 * PER;
        float fx[R];
#pragma unroll
        for (int r = 0; r < R; r++) fx[r] = 0.f;
        float sx = 0.f;
#pragma unroll
        for (int wi = 0; wi < 4; wi++) {
          float xv[PER];
#pragma unroll
          for (int k = 0; k < PER; k += 4) {
            const float4 f = __ldg(reinterpret_cast<const float4*>(x + col0 + wi * PER + k));
            if (NRM) {
              const float4 g = __ldg(reinterpret_cast<const float4*>(nw + col0 + wi * PER + k));
              xv[k] = f.x * g.x; xv[k + 1] = f.y * g.y; xv[k + 2] = f.z * g.z; xv[k + 3] = f.w * g.w;
              *ss = fmaf(f.x, f.x, fmaf(f.y, f.y, fmaf(f.z, f.z, fmaf(f.w, f.w, *ss))));
            } else {
              xv[k] = f.x; xv[k + 1] = f.y; xv[k + 2] = f.z; xv[k + 3] = f.w;
            }
          }
#pragma unroll
          for (int k = 0; k < PER; k++) sx += xv[k];
#if FMOE_DQ
#pragma unroll
          for (int k = 0; k < PER; k++) xv[k] *= dq_xs<BITS>(k);
#endif
#pragma unroll
          for (int r = 0; r < R; r++) {
            const u32 w = wi == 0 ? q[u][r].x : wi == 1 ? q[u][r].y : wi == 2 ? q[u][r].z : q[u][r].w;
            float a = fx[r];
#if FMOE_DQ
            const u32 w8 = w >> 8;
#pragma unroll
            for (int k = 0; k < PER; k++) a = fmaf(dq_code<BITS>(w, w8, k), xv[k], a);
#else
#pragma unroll
            for (int k = 0; k < PER; k++) a = fmaf(codef<BITS>(w, k), xv[k], a);
#endif
            fx[r] = a;
          }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
#if FMOE_DQ
          const float s = bf16f(sv[u][r]) * DQ_UNSCALE;
          const float b = bf16f(bv[u][r]);
          acc[r] = fmaf(s, fx[r], fmaf(b, sx, acc[r]));
#else
          const float s = bf16f(sv[u][r]) * SC;
          const float b = bf16f(bv[u][r]);
          acc[r] = fmaf(s, fx[r], fmaf(b - s, sx, acc[r]));
#endif
        }
      }
    }
  }
}

template <int BITS, int R, int U>
__device__ __forceinline__ void qmv_body(const u32* W, const u16* S, const u16* B, const float* x, float* y, int out, int in, int group) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int r0 = warp * R;
  if (r0 >= out) return;
  const int wpr = in / (32 / BITS), gpr = in / group;
  const u32* wr[R];
  const u16 *sr[R], *br[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    const size_t rr = (size_t)min(r0 + r, out - 1);
    wr[r] = W + rr * wpr; sr[r] = S + rr * gpr; br[r] = B + rr * gpr;
  }
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.f;
  qmv_rows<BITS, R, U>(wr, sr, br, in, group, x, acc, threadIdx.x & 31, 32);
#pragma unroll
  for (int r = 0; r < R; r++) {
    const float v = warp_sum(acc[r]);
    if ((threadIdx.x & 31) == 0 && r0 + r < out) y[r0 + r] = v;
  }
}

// qmvk: decode matvec with the columns split over the 4 warps of a block:
// one block per R rows, lane l of warp w reads chunks l + 32w, l + 32w + 128,
// … of every row (R 128-bit loads in flight per lane), partial sums meet in
// shared memory. Four times the blocks of qmv for the same rows: small
// matrices fill the GPU and each warp's serial chain is a quarter as long.
template <int BITS, int R>
__device__ __forceinline__ void qmvk_body(const u32* W, const u16* S, const u16* B, const float* x, float* y, int out, int in, int group) {
  __shared__ float red[4][R];
  const int r0 = blockIdx.x * R;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int wpr = in / (32 / BITS), gpr = in / group;
  const u32* wr[R];
  const u16 *sr[R], *br[R];
#pragma unroll
  for (int r = 0; r < R; r++) {
    const size_t rr = (size_t)min(r0 + r, out - 1);
    wr[r] = W + rr * wpr; sr[r] = S + rr * gpr; br[r] = B + rr * gpr;
  }
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.f;
  qmv_rows<BITS, R, 1>(wr, sr, br, in, group, x, acc, threadIdx.x, 128);
#pragma unroll
  for (int r = 0; r < R; r++) {
    const float v = warp_sum(acc[r]);
    if (lane == 0) red[w][r] = v;
  }
  __syncthreads();
  if (threadIdx.x < R && r0 + threadIdx.x < out) {
    const int r = threadIdx.x;
    y[r0 + r] = (red[0][r] + red[1][r]) + (red[2][r] + red[3][r]);
  }
}

#define QMV_ARGS const u32 *W, const u16 *S, const u16 *B, const float *x, float *y, int out, int in, int group
#define QMV(BITS)                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(128) qmv##BITS##_r4u2(QMV_ARGS) { pdl_wait(); qmv_body<BITS, 4, 2>(W, S, B, x, y, out, in, group); } \
  extern "C" __global__ void __launch_bounds__(128) qmv##BITS##_r2u4(QMV_ARGS) { pdl_wait(); qmv_body<BITS, 2, 4>(W, S, B, x, y, out, in, group); } \
  extern "C" __global__ void __launch_bounds__(128) qmv##BITS##_r8u1(QMV_ARGS) { pdl_wait(); qmv_body<BITS, 8, 1>(W, S, B, x, y, out, in, group); } \
  extern "C" __global__ void __launch_bounds__(128) qmv##BITS##_r4u1(QMV_ARGS) { pdl_wait(); qmv_body<BITS, 4, 1>(W, S, B, x, y, out, in, group); } \
  extern "C" __global__ void __launch_bounds__(128) qmv##BITS##_k8(QMV_ARGS) { pdl_wait(); qmvk_body<BITS, 8>(W, S, B, x, y, out, in, group); } \
  extern "C" __global__ void __launch_bounds__(128) qmv##BITS##_k4(QMV_ARGS) { pdl_wait(); qmvk_body<BITS, 4>(W, S, B, x, y, out, in, group); }
QMV(2)
QMV(4)
QMV(8)

// qgemm: prefill y[t, r] = W[r]·x[t] for T tokens, tiled. A block of 128
// threads computes 64 rows × 8·TN tokens: it dequantizes a 64×32 weight tile
// into shared memory once and uses it for every token of the tile. Thread
// (tx = tid%16, ty = tid/16) owns rows tx+16i (i<4) and tokens ty+8j (j<TN).
// gridDim.z splits the columns (split-K): with gridDim.z > 1 the partial sums
// go to part[z][T][out] and qgemm_sum adds them. Needs in % 32 == 0.
#define QG_BM 64
#define QG_BK 32
template <int BITS, int TN>
__device__ __forceinline__ void qgemm_body(const u32* __restrict__ W, const u16* __restrict__ S, const u16* __restrict__ B,
                                           const float* __restrict__ x, float* __restrict__ y, int out, int in, int T, int group, int kchunk) {
  constexpr int PER = 32 / BITS;
  constexpr int WPT = QG_BK / PER;  // words per row per tile
  constexpr int BT = 8 * TN;
  __shared__ float Ws[QG_BK][QG_BM + 1];
  __shared__ float Xs[QG_BK][BT + 1];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int r0 = blockIdx.x * QG_BM, t0 = blockIdx.y * BT;
  const int kb = blockIdx.z * kchunk, ke = min(in, kb + kchunk);
  const int wpr = in / PER, gpr = in / group;
  float acc[4][TN];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < TN; j++) acc[i][j] = 0.f;
  for (int k0 = kb; k0 < ke; k0 += QG_BK) {
    // weights: QG_BM rows × WPT words, dequantized into Ws[col][row]
    for (int idx = tid; idx < QG_BM * WPT; idx += 128) {
      const int row = idx / WPT, wi = idx % WPT;
      const int gr = r0 + row;
      const int col = k0 + wi * PER;
      float v[PER];
      if (gr < out) {
        const u32 w = __ldg(W + (size_t)gr * wpr + col / PER);
#pragma unroll
        for (int k = 0; k < PER; k++) {
          const int gi = (col + k) / group;
          const float s = bf16f(__ldg(S + (size_t)gr * gpr + gi)) * (float)(1 << BITS);
          const float b = bf16f(__ldg(B + (size_t)gr * gpr + gi));
          v[k] = fmaf(codef<BITS>(w, k), s, b - s);
        }
      } else {
#pragma unroll
        for (int k = 0; k < PER; k++) v[k] = 0.f;
      }
#pragma unroll
      for (int k = 0; k < PER; k++) Ws[wi * PER + k][row] = v[k];
    }
    // activations: BT tokens × QG_BK columns into Xs[col][token]
    for (int idx = tid; idx < BT * QG_BK; idx += 128) {
      const int t = idx / QG_BK, c = idx % QG_BK;
      Xs[c][t] = t0 + t < T ? x[(size_t)(t0 + t) * in + k0 + c] : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < QG_BK; kk++) {
      float a[4], bv[TN];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = Ws[kk][tx + 16 * i];
#pragma unroll
      for (int j = 0; j < TN; j++) bv[j] = Xs[kk][ty + 8 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = fmaf(a[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
  float* dst = gridDim.z > 1 ? y + (size_t)blockIdx.z * T * out : y;
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < TN; j++) {
      const int r = r0 + tx + 16 * i, t = t0 + ty + 8 * j;
      if (r < out && t < T) dst[(size_t)t * out + r] = acc[i][j];
    }
}

#define QG_ARGS const u32 *W, const u16 *S, const u16 *B, const float *x, float *y, int out, int in, int T, int group, int kchunk
#define QG(BITS)                                                                                                                                  \
  extern "C" __global__ void __launch_bounds__(128) qgemm##BITS##_1(QG_ARGS) { pdl_wait(); qgemm_body<BITS, 1>(W, S, B, x, y, out, in, T, group, kchunk); } \
  extern "C" __global__ void __launch_bounds__(128) qgemm##BITS##_2(QG_ARGS) { pdl_wait(); qgemm_body<BITS, 2>(W, S, B, x, y, out, in, T, group, kchunk); } \
  extern "C" __global__ void __launch_bounds__(128) qgemm##BITS##_4(QG_ARGS) { pdl_wait(); qgemm_body<BITS, 4>(W, S, B, x, y, out, in, T, group, kchunk); }
QG(2)
QG(4)
QG(8)

// qgemm_sum: y[i] = Σ_z part[z][i] over nz splits (fixed order: deterministic).
extern "C" __global__ void qgemm_sum(const float* part, float* y, long long n, int nz) { pdl_wait();
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int z = 0; z < nz; z++) s += part[(size_t)z * n + i];
    y[i] = s;
  }
}

// ---- batched MoE: every (token, expert) pair in one launch per projection ----

// moe_gu2: h[p] = silu(G_e x_t) ⊙ (U_e x_t) for pair p = t0*K + blockIdx.y.
// One warp per 2 rows of I, gate and up rows loaded together (4 rows of 128-bit
// loads in flight, two chunks each).
template <int BITS>
__device__ __forceinline__ void moe_gu_fast(const u64* table, const int* ids, const float* x, float* hbuf,
                                            int I, int Hd, int group, int K, int t0, ProjOff g, ProjOff u) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int r0 = warp * 2;
  if (r0 >= I) return;
  const int p = t0 * K + blockIdx.y;
  const int tok = p / K;
  const char* base = reinterpret_cast<const char*>(table[ids[p]]);
  const int wpr = Hd / (32 / BITS), gpr = Hd / group;
  const int ra = r0, rb = min(r0 + 1, I - 1);
  const u32* GW = (const u32*)(base + g.w);
  const u32* UW = (const u32*)(base + u.w);
  const u16 *GS = (const u16*)(base + g.s), *GB = (const u16*)(base + g.b);
  const u16 *US = (const u16*)(base + u.s), *UB = (const u16*)(base + u.b);
  const u32* const wr[4] = {GW + (size_t)ra * wpr, GW + (size_t)rb * wpr, UW + (size_t)ra * wpr, UW + (size_t)rb * wpr};
  const u16* const sr[4] = {GS + (size_t)ra * gpr, GS + (size_t)rb * gpr, US + (size_t)ra * gpr, US + (size_t)rb * gpr};
  const u16* const br[4] = {GB + (size_t)ra * gpr, GB + (size_t)rb * gpr, UB + (size_t)ra * gpr, UB + (size_t)rb * gpr};
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  qmv_rows<BITS, 4, 2>(wr, sr, br, Hd, group, x + (size_t)tok * Hd, acc, threadIdx.x & 31, 32);
#pragma unroll
  for (int r = 0; r < 4; r++) acc[r] = warp_sum(acc[r]);
  if ((threadIdx.x & 31) == 0) {
    hbuf[(size_t)p * I + r0] = silu(acc[0]) * acc[2];
    if (r0 + 1 < I) hbuf[(size_t)p * I + r0 + 1] = silu(acc[1]) * acc[3];
  }
}

// moe_gu_k: as moe_gu_fast, with one block of 4 warps per 2 rows of I, the
// warps splitting the columns (8 warps' worth of blocks for the same work:
// at decode, K pairs × I/2 blocks fill the GPU).
template <int BITS>
__device__ __forceinline__ void moe_gu_k(const u64* table, const int* ids, const float* x, float* hbuf,
                                         int I, int Hd, int group, int K, int t0, ProjOff g, ProjOff u) {
  __shared__ float red[4][4];
  const int r0 = blockIdx.x * 2;
  const int p = t0 * K + blockIdx.y;
  const int tok = p / K;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const char* base = reinterpret_cast<const char*>(table[ids[p]]);
  const int wpr = Hd / (32 / BITS), gpr = Hd / group;
  const int ra = min(r0, I - 1), rb = min(r0 + 1, I - 1);
  const u32* GW = (const u32*)(base + g.w);
  const u32* UW = (const u32*)(base + u.w);
  const u16 *GS = (const u16*)(base + g.s), *GB = (const u16*)(base + g.b);
  const u16 *US = (const u16*)(base + u.s), *UB = (const u16*)(base + u.b);
  const u32* const wr[4] = {GW + (size_t)ra * wpr, GW + (size_t)rb * wpr, UW + (size_t)ra * wpr, UW + (size_t)rb * wpr};
  const u16* const sr[4] = {GS + (size_t)ra * gpr, GS + (size_t)rb * gpr, US + (size_t)ra * gpr, US + (size_t)rb * gpr};
  const u16* const br[4] = {GB + (size_t)ra * gpr, GB + (size_t)rb * gpr, UB + (size_t)ra * gpr, UB + (size_t)rb * gpr};
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  qmv_rows<BITS, 4, 1>(wr, sr, br, Hd, group, x + (size_t)tok * Hd, acc, threadIdx.x, 128);
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const float v = warp_sum(acc[r]);
    if (lane == 0) red[w][r] = v;
  }
  __syncthreads();
  if (threadIdx.x < 2 && r0 + threadIdx.x < I) {
    const int r = threadIdx.x;
    const float gv = (red[0][r] + red[1][r]) + (red[2][r] + red[3][r]);
    const float uv = (red[0][r + 2] + red[1][r + 2]) + (red[2][r + 2] + red[3][r + 2]);
    hbuf[(size_t)p * I + r0 + r] = silu(gv) * uv;
  }
}

// moe_dn2: part[p, r] = D_e[r]·h[p] for pair p = t0*K + blockIdx.y (no
// weighting: moe_combine applies the routing weights).
template <int BITS>
__device__ __forceinline__ void moe_dn_fast(const u64* table, const int* ids, const float* hbuf, float* part,
                                            int Hd, int I, int group, int K, int t0, ProjOff d) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int r0 = warp * 4;
  if (r0 >= Hd) return;
  const int p = t0 * K + blockIdx.y;
  const char* base = reinterpret_cast<const char*>(table[ids[p]]);
  const int wpr = I / (32 / BITS), gpr = I / group;
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
  qmv_rows<BITS, 4, 1>(wr, sr, br, I, group, hbuf + (size_t)p * I, acc, threadIdx.x & 31, 32);
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const float v = warp_sum(acc[r]);
    if ((threadIdx.x & 31) == 0 && r0 + r < Hd) part[(size_t)p * Hd + r0 + r] = v;
  }
}

// moe_combine: dst[t, c] = Σ_k w[t,k]·part[t*K+k, c] for tokens t0..t0+gridDim.y-1.
extern "C" __global__ void moe_combine(const float* part, const float* wts, float* dst, int Hd, int K, int t0) { pdl_wait();
  const int t = t0 + blockIdx.y;
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < Hd; c += gridDim.x * blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < K; k++) s = fmaf(wts[t * K + k], part[(size_t)(t * K + k) * Hd + c], s);
    dst[(size_t)t * Hd + c] = s;
  }
}

#define MOE_DN2_ARGS const u64 *table, const int *ids, const float *hbuf, float *part, int Hd, int I, int group, int K, int t0, long long dw, long long ds, long long db
#define MOEF(BITS)                                                                                                                                     \
  extern "C" __global__ void __launch_bounds__(128) moe_gu##BITS##f(MOE_GU_ARGS) { pdl_wait(); moe_gu_fast<BITS>(table, ids, x, hbuf, I, Hd, group, K, t0, ProjOff{gw, gs, gb}, ProjOff{uw, us, ub}); } \
  extern "C" __global__ void __launch_bounds__(128) moe_gu##BITS##k(MOE_GU_ARGS) { pdl_wait(); moe_gu_k<BITS>(table, ids, x, hbuf, I, Hd, group, K, t0, ProjOff{gw, gs, gb}, ProjOff{uw, us, ub}); } \
  extern "C" __global__ void __launch_bounds__(128) moe_dn##BITS##f(MOE_DN2_ARGS) { pdl_wait(); moe_dn_fast<BITS>(table, ids, hbuf, part, Hd, I, group, K, t0, ProjOff{dw, ds, db}); }
MOEF(2)
MOEF(4)
MOEF(8)
