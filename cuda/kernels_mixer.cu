// ---- gated full attention ----

// attn_prep: one block (HD threads) per (token, head) of q and per (token,
// kv head) of k. Applies the q/k RMSNorm, partial rotate-half RoPE, writes q
// to qout [T, H*HD] and k, v into the cache rows pos0+t ([pos, KVH*HD]).
// pos0 = *plen, the cache length in device memory (attn_combine advances it),
// so that a decode step's launches do not change from token to token.
extern "C" __global__ void attn_prep(const float* qg, const float* k, const float* v, float* kc, float* vc,
                                     float* qout, const float* qn, const float* kn, int H, int KVH, int HD,
                                     int RD, const int* plen, float theta, float eps) { pdl_wait();
  const int pos0 = *plen;
  extern __shared__ float sm[];
  float* y = sm;         // HD
  float* red = sm + HD;  // 32
  const int nh = H + KVH;
  const int t = blockIdx.x / nh, h = blockIdx.x % nh;
  const int d = threadIdx.x;
  const float* src;
  const float* nw;
  if (h < H) { src = qg + (size_t)t * H * 2 * HD + (size_t)h * 2 * HD; nw = qn; }
  else { src = k + (size_t)t * KVH * HD + (size_t)(h - H) * HD; nw = kn; }
  const float xv = d < HD ? src[d] : 0.f;
  const float ss = block_sum(xv * xv, red);
  const float r = rsqrtf(ss / (float)HD + eps);
  if (d < HD) y[d] = xv * r * nw[d];
  __syncthreads();
  if (d >= HD) return;
  float o = y[d];
  const int half = RD / 2;
  if (d < RD) {
    const int i = d < half ? d : d - half;
    const float inv = 1.f / powf(theta, (float)(2 * i) / (float)RD);
    const float ang = (float)(pos0 + t) * inv;
    const float c = cosf(ang), s = sinf(ang);
    o = d < half ? y[d] * c - y[d + half] * s : y[d] * c + y[d - half] * s;
  }
  if (h < H) {
    qout[(size_t)t * H * HD + (size_t)h * HD + d] = o;
  } else {
    const size_t row = (size_t)(pos0 + t) * KVH * HD + (size_t)(h - H) * HD + d;
    kc[row] = o;
    vc[row] = v[(size_t)t * KVH * HD + (size_t)(h - H) * HD + d];
  }
}

#define ATT_WARPS 4
#define ATT_MAXD 16  // HD ≤ 512

// attn_split: flash-decoding. Block (t*H + h, y) attends token t of head h
// over its share y of the positions 0..pos0+t (gridDim.y shares, pos0 =
// *plen), ATT_WARPS-wide online softmax per warp, merged in the block, and
// writes the unnormalised partial (acc[HD], max, sum) to part[(t*H+h)*NS+y].
extern "C" __global__ void __launch_bounds__(128) attn_split(const float* q, const float* kc, const float* vc, float* part,
                                                             const int* plen, int H, int KVH, int HD, float scale) { pdl_wait();
  extern __shared__ float sm[];  // ATT_WARPS*(HD+2)
  const int NS = gridDim.y, y = blockIdx.y;
  const int t = blockIdx.x / H, h = blockIdx.x % H;
  const int kvh = h / (H / KVH);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int n = *plen + t + 1;
  const int chunk = (n + NS - 1) / NS;
  const int s0 = y * chunk, s1 = min(n, s0 + chunk);
  float qr[ATT_MAXD], acc[ATT_MAXD];
  const float* qp = q + (size_t)t * H * HD + (size_t)h * HD;
#pragma unroll
  for (int i = 0; i < ATT_MAXD; i++) {
    const int d = lane + 32 * i;
    qr[i] = d < HD ? qp[d] : 0.f;
    acc[i] = 0.f;
  }
  float m = -FINF, l = 0.f;
  for (int s = s0 + w; s < s1; s += ATT_WARPS) {
    const float* kp = kc + (size_t)s * KVH * HD + (size_t)kvh * HD;
    const float* vp = vc + (size_t)s * KVH * HD + (size_t)kvh * HD;
    float kv[ATT_MAXD], vv[ATT_MAXD];
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) {
      const int d = lane + 32 * i;
      kv[i] = d < HD ? kp[d] : 0.f;
      vv[i] = d < HD ? vp[d] : 0.f;
    }
    float dot = 0.f;
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) dot = fmaf(qr[i], kv[i], dot);
    const float sc = warp_sum(dot) * scale;
    const float mn = fmaxf(m, sc);
    const float corr = expf(m - mn);
    const float e = expf(sc - mn);
    l = l * corr + e;
#pragma unroll
    for (int i = 0; i < ATT_MAXD; i++) acc[i] = fmaf(e, vv[i], acc[i] * corr);
    m = mn;
  }
  float* wa = sm + w * (HD + 2);
#pragma unroll
  for (int i = 0; i < ATT_MAXD; i++) {
    const int d = lane + 32 * i;
    if (d < HD) wa[d] = acc[i];
  }
  if (lane == 0) { wa[HD] = m; wa[HD + 1] = l; }
  __syncthreads();
  float M = -FINF;
  for (int j = 0; j < ATT_WARPS; j++) M = fmaxf(M, sm[j * (HD + 2) + HD]);
  float* out = part + ((size_t)blockIdx.x * NS + y) * (HD + 2);
  float L = 0.f;
  for (int j = 0; j < ATT_WARPS; j++) {
    const float mj = sm[j * (HD + 2) + HD];
    if (mj > -FINF) L += sm[j * (HD + 2) + HD + 1] * expf(mj - M);
  }
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float o = 0.f;
    for (int j = 0; j < ATT_WARPS; j++) {
      const float mj = sm[j * (HD + 2) + HD];
      if (mj > -FINF) o += sm[j * (HD + 2) + d] * expf(mj - M);
    }
    out[d] = o;
  }
  if (threadIdx.x == 0) { out[HD] = M; out[HD + 1] = L; }
}

// attn_combine: one block per (token, head): merges the NS (≤ 32) partials
// of attn_split, multiplies by σ(gate) and writes dst [T, H*HD]. Block 0
// then advances the cache length *plen by T (every reader of it has
// finished). Warp 0 reads every split's max and sum at once and the
// splits' rows are read with their loads unrolled: a few L2 round trips,
// not three per split.
extern "C" __global__ void attn_combine(const float* part, const float* qg, float* dst, int* plen, int H, int HD, int NS) {
  __shared__ float ej[32], lj[32];
  __shared__ float Ls;
  pdl_wait();
  const int t = blockIdx.x / H, h = blockIdx.x % H;
  const float* pp = part + (size_t)blockIdx.x * NS * (HD + 2);
  if (threadIdx.x < 32) {
    const int j = threadIdx.x;
    const float mj = j < NS ? pp[j * (HD + 2) + HD] : -FINF;
    const float sj = j < NS ? pp[j * (HD + 2) + HD + 1] : 0.f;
    float M = mj;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    ej[j] = mj > -FINF ? expf(mj - M) : 0.f;
    lj[j] = sj;
    __syncwarp();
    if (j == 0) {
      float L = 0.f;
      for (int i = 0; i < NS; i++)
        if (ej[i] != 0.f) L += lj[i] * ej[i];
      Ls = L;
    }
  }
  __syncthreads();
  const float L = Ls;
  for (int d = threadIdx.x; d < HD; d += blockDim.x) {
    float o = 0.f;
#pragma unroll 8
    for (int j = 0; j < NS; j++) {
      const float v = pp[j * (HD + 2) + d];
      if (ej[j] != 0.f) o += v * ej[j];
    }
    o /= L;
    const float g = qg[(size_t)t * H * 2 * HD + (size_t)h * 2 * HD + HD + d];
    dst[(size_t)t * H * HD + (size_t)h * HD + d] = o * sigm(g);
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) *plen += gridDim.x / H;
}

// ---- GatedDeltaNet ----

// conv_tap: one output of the causal conv of K ≤ 8 taps, SiLU applied, from
// the channel's K-1 previous inputs hist (oldest first) and the current one;
// hist moves on by one.
__device__ __forceinline__ float conv_tap(const float (&wk)[8], float (&hist)[8], float cur, int K) {
  float y = 0.f;
#pragma unroll
  for (int k = 0; k < 7; k++)
    if (k < K - 1) y = fmaf(wk[k], hist[k], y);
#pragma unroll
  for (int k = 0; k < 8; k++)
    if (k == K - 1) y = fmaf(wk[k], cur, y);
#pragma unroll
  for (int k = 0; k < 7; k++)
    if (k < K - 2) hist[k] = hist[k + 1];
#pragma unroll
  for (int k = 0; k < 8; k++)
    if (k == K - 2) hist[k] = cur;
  return silu(y);
}

// delta_conv: causal depthwise conv + SiLU, one thread per channel, tokens in
// order. state is [(K-1), C], oldest first; W[c*K + k], tap K-1 = current.
extern "C" __global__ void delta_conv(const float* qkv, const float* W, float* state, float* out, int T, int C, int K) { pdl_wait();
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float hist[8];
#pragma unroll
  for (int k = 0; k < 8; k++) hist[k] = k < K - 1 ? state[(size_t)k * C + c] : 0.f;
  float wk[8];
#pragma unroll
  for (int k = 0; k < 8; k++) wk[k] = k < K ? W[(size_t)c * K + k] : 0.f;
  for (int t = 0; t < T; t++) out[(size_t)t * C + c] = conv_tap(wk, hist, qkv[(size_t)t * C + c], K);
#pragma unroll
  for (int k = 0; k < 8; k++)
    if (k < K - 1) state[(size_t)k * C + c] = hist[k];
}

__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// delta_rule: one block of VD threads per value head; the head's state
// S[i][j] (KD×VD, fp32) lives in shared memory for all T tokens. Fused:
// l2norm of q (÷√KD) and k, β = σ(b), α = exp(-exp(aLog)·softplus(a+dtBias)),
// decay, retrieve, delta, update, read, gated RMSNorm with silu(z).
extern "C" __global__ void delta_rule(const float* conv, const float* z, const float* b, const float* a,
                                      float* state, const float* dtBias, const float* aLog, const float* normW,
                                      float* dst, int T, int KH, int VH, int KD, int VD, float eps) { pdl_wait();
  extern __shared__ float sm[];
  float* S = sm;                     // KD*VD
  float* qs = S + (size_t)KD * VD;   // KD
  float* ks = qs + KD;               // KD
  float* red = ks + KD;              // 32
  const int h = blockIdx.x;
  const int kh = h / (VH / KH);
  const int j = threadIdx.x;
  const int C = 2 * KH * KD + VH * VD;
  float* Sg = state + (size_t)h * KD * VD;
  for (int i = threadIdx.x; i < KD * VD; i += blockDim.x) S[i] = Sg[i];
  const float qscale = rsqrtf((float)KD);
  const float A = expf(aLog[h]);
  for (int t = 0; t < T; t++) {
    const float* row = conv + (size_t)t * C;
    float sq = 0.f, sk = 0.f;
    for (int i = threadIdx.x; i < KD; i += blockDim.x) {
      const float qv = row[kh * KD + i], kv = row[KH * KD + kh * KD + i];
      qs[i] = qv; ks[i] = kv;
      sq = fmaf(qv, qv, sq); sk = fmaf(kv, kv, sk);
    }
    sq = block_sum(sq, red);
    sk = block_sum(sk, red);
    const float rq = qscale / sqrtf(sq + 1e-6f), rk = 1.f / sqrtf(sk + 1e-6f);
    const float beta = sigm(b[(size_t)t * VH + h]);
    const float alpha = expf(-A * softplus_f(a[(size_t)t * VH + h] + dtBias[h]));
    float o = 0.f;
    if (j < VD) {
      const float vj = row[2 * KH * KD + h * VD + j];
      float m = 0.f;
      for (int i = 0; i < KD; i++) {
        const float s = S[i * VD + j] * alpha;
        S[i * VD + j] = s;
        m = fmaf(s, ks[i] * rk, m);
      }
      const float delta = (vj - m) * beta;
      for (int i = 0; i < KD; i++) {
        const float s = fmaf(ks[i] * rk, delta, S[i * VD + j]);
        S[i * VD + j] = s;
        o = fmaf(s, qs[i] * rq, o);
      }
    }
    const float ss = block_sum(j < VD ? o * o : 0.f, red);
    if (j < VD) {
      const float n = o * rsqrtf(ss / (float)VD + eps);
      const size_t idx = (size_t)t * VH * VD + (size_t)h * VD + j;
      dst[idx] = normW[j] * n * silu(z[idx]);
    }
    __syncthreads();  // qs/ks reused by the next token
  }
  for (int i = threadIdx.x; i < KD * VD; i += blockDim.x) Sg[i] = S[i];
}

// delta_rule2: the delta rule with the state in registers. One block of
// RG·VD threads per value head (RG = KD/ROWS): thread (g, j) holds column j of
// rows g, g+RG, …, g+(ROWS-1)·RG of the head's state S[KD][VD] (coalesced:
// consecutive threads, consecutive columns). Per token: decay, retrieve
// (column sums across the RG row groups through shared memory), delta,
// update, read, gated RMSNorm, all in one pass; the state is read and written
// once per call whatever T is.
template <int ROWS>
__device__ __forceinline__ void delta2_body(const float* conv, const float* z, const float* b, const float* a,
                                            float* state, const float* dtBias, const float* aLog, const float* normW,
                                            float* dst, int T, int KH, int VH, int KD, int VD, float eps) {
  extern __shared__ float sm[];
  const int RG = blockDim.x / VD;
  float* qs = sm;               // KD
  float* ks = qs + KD;          // KD
  float* part = ks + KD;        // RG*VD
  float* red = part + RG * VD;  // 32
  const int h = blockIdx.x;
  const int kh = h / (VH / KH);
  const int tid = threadIdx.x, j = tid % VD, g = tid / VD;
  const int C = 2 * KH * KD + VH * VD;
  float* Sg = state + (size_t)h * KD * VD;
  float s[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; r++) s[r] = Sg[(size_t)(g + RG * r) * VD + j];
  // The state is loaded before pdl_wait: only this layer's previous call
  // wrote it, and that call had finished before the kernel this one waits
  // for started (each kernel waits for the one before it); a Reset's memset
  // is not a programmatic edge. The inputs of this call are read after.
  pdl_wait();
  const float qscale = rsqrtf((float)KD);
  const float A = expf(aLog[h]);
  const float dtb = dtBias[h], nw = normW[j];
  for (int t = 0; t < T; t++) {
    const float* row = conv + (size_t)t * C;
    float sq = 0.f, sk = 0.f;
    for (int i = tid; i < KD; i += blockDim.x) {
      const float qv = row[kh * KD + i], kv = row[KH * KD + kh * KD + i];
      qs[i] = qv; ks[i] = kv;
      sq = fmaf(qv, qv, sq); sk = fmaf(kv, kv, sk);
    }
    sq = block_sum(sq, red);  // also publishes qs, ks
    sk = block_sum(sk, red);
    const float rq = qscale / sqrtf(sq + 1e-6f), rk = 1.f / sqrtf(sk + 1e-6f);
    const float beta = sigm(b[(size_t)t * VH + h]);
    const float alpha = expf(-A * softplus_f(a[(size_t)t * VH + h] + dtb));
    const float vj = row[2 * KH * KD + h * VD + j];
    float m = 0.f;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      s[r] *= alpha;
      m = fmaf(s[r], ks[g + RG * r], m);
    }
    part[g * VD + j] = m;
    __syncthreads();
    float M = 0.f;
    for (int i = 0; i < RG; i++) M += part[i * VD + j];
    const float delta = (vj - M * rk) * beta;
    const float dk = delta * rk;
    float o = 0.f;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      s[r] = fmaf(ks[g + RG * r], dk, s[r]);
      o = fmaf(s[r], qs[g + RG * r], o);
    }
    __syncthreads();  // every part read before it is overwritten
    part[g * VD + j] = o;
    __syncthreads();
    float O = 0.f;
    for (int i = 0; i < RG; i++) O += part[i * VD + j];
    O *= rq;
    const float ss = block_sum(g == 0 ? O * O : 0.f, red);  // also orders part reads before the next token's writes
    if (g == 0) {
      const size_t idx = (size_t)t * VH * VD + (size_t)h * VD + j;
      dst[idx] = nw * O * rsqrtf(ss / (float)VD + eps) * silu(z[idx]);
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; r++) Sg[(size_t)(g + RG * r) * VD + j] = s[r];
}

#define DELTA2_ARGS const float *conv, const float *z, const float *b, const float *a, float *state, const float *dtBias, const float *aLog, const float *normW, float *dst, int T, int KH, int VH, int KD, int VD, float eps
#define DELTA2(R) \
  extern "C" __global__ void __launch_bounds__(512) delta_rule2_##R(DELTA2_ARGS) { delta2_body<R>(conv, z, b, a, state, dtBias, aLog, normW, dst, T, KH, VH, KD, VD, eps); }
DELTA2(1)
DELTA2(2)
DELTA2(4)
DELTA2(8)
DELTA2(16)
DELTA2(32)

// ---- GatedDeltaNet over a prompt: parallel across columns and tokens ----

// delta_conv_t: delta_conv for a prompt step. A block covers 32 channels ×
// blockDim.y token groups; the thread of group y runs its channel over
// tokens [y·TT, (y+1)·TT), so its loads are independent and several are in
// flight (delta_conv walks all T tokens in one thread). Inputs before the
// step come from the state; the state's new K-1 inputs are read before the
// block's barrier and written after it, so no thread reads a state value
// another has overwritten (each block owns its channels).
extern "C" __global__ void __launch_bounds__(256) delta_conv_t(const float* __restrict__ qkv, const float* __restrict__ W,
                                                               float* __restrict__ state, float* __restrict__ out, int T, int C, int K) {
  const int c = blockIdx.x * 32 + threadIdx.x;
  const bool on = c < C;
  float wk[8];
#pragma unroll
  for (int k = 0; k < 8; k++) wk[k] = on && k < K ? W[(size_t)c * K + k] : 0.f;
  pdl_wait();
  const int TT = (T + blockDim.y - 1) / blockDim.y;
  const int t0 = threadIdx.y * TT, t1 = min(T, t0 + TT);
  // x(u): input u of this step; u < 0 reads the state (oldest first).
  auto x = [&](int u) -> float { return u >= 0 ? qkv[(size_t)u * C + c] : state[(size_t)(K - 1 + u) * C + c]; };
  float ns[7];
  if (on) {
    if (threadIdx.y == 0) {
#pragma unroll
      for (int k = 0; k < 7; k++)
        if (k < K - 1) ns[k] = x(T - (K - 1) + k);
    }
    if (t0 < t1) {
      float hist[8];
#pragma unroll
      for (int k = 0; k < 8; k++) hist[k] = k < K - 1 ? x(t0 - (K - 1) + k) : 0.f;
#pragma unroll 4
      for (int t = t0; t < t1; t++) out[(size_t)t * C + c] = conv_tap(wk, hist, qkv[(size_t)t * C + c], K);
    }
  }
  __syncthreads();
  if (on && threadIdx.y == 0) {
#pragma unroll
    for (int k = 0; k < 7; k++)
      if (k < K - 1) state[(size_t)k * C + c] = ns[k];
  }
}

// delta_qkg: the per-token inputs of delta_cols that do not depend on the
// state, once per token instead of once per warp: q and k of each key head
// L2-normalised in place in the conv output (q also ÷√KD), and per value head
// the gates (α, β) = (exp(-exp(aLog)·softplus(a+dtBias)), σ(b)). One block per
// token.
extern "C" __global__ void delta_qkg(float* conv, const float* b, const float* a, const float* dtBias, const float* aLog,
                                     float2* gates, int T, int KH, int VH, int KD, int VD) {
  pdl_wait();
  const int t = blockIdx.x, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  const int C = 2 * KH * KD + VH * VD;
  float* row = conv + (size_t)t * C;
  const float qscale = rsqrtf((float)KD);
  for (int kh = threadIdx.x >> 5; kh < KH; kh += nw) {
    float* q = row + kh * KD;
    float* k = row + KH * KD + kh * KD;
    float sq = 0.f, sk = 0.f;
    for (int i = lane; i < KD; i += 32) { sq = fmaf(q[i], q[i], sq); sk = fmaf(k[i], k[i], sk); }
    sq = warp_sum(sq);
    sk = warp_sum(sk);
    const float rq = qscale / sqrtf(sq + 1e-6f), rk = 1.f / sqrtf(sk + 1e-6f);
    for (int i = lane; i < KD; i += 32) { q[i] *= rq; k[i] *= rk; }
  }
  for (int h = threadIdx.x; h < VH; h += blockDim.x) {
    const float A = expf(aLog[h]);
    gates[(size_t)t * VH + h] = make_float2(expf(-A * softplus_f(a[(size_t)t * VH + h] + dtBias[h])), sigm(b[(size_t)t * VH + h]));
  }
}

// cp.async helpers (sm_80+; a plain copy before)
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
#else
  *reinterpret_cast<float4*>(dst) = *reinterpret_cast<const float4*>(src);
#endif
}
__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"((unsigned)__cvta_generic_to_shared(dst)), "l"(src) : "memory");
#else
  *reinterpret_cast<float2*>(dst) = *reinterpret_cast<const float2*>(src);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
__device__ __forceinline__ void cp_async_wait1() {  // all but the newest group landed
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}

// sum8: the sum of v over the lane's aligned group of 8 lanes.
__device__ __forceinline__ float sum8(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v + __shfl_xor_sync(0xffffffffu, v, 4);
}

// delta_cols: the delta rule for a prompt step, parallel across columns.
// Column j of a head's state S[KD][VD] evolves on its own (the retrieve
// Σ_i S[i][j]·k_i and the read Σ_i S[i][j]·q_i need only column j), so the
// warps walk the tokens side by side: a block takes 16 columns of one head,
// a warp 4 of them, 8 lanes per column, R = KD/8 rows per lane (lane group
// rg holds rows 32i + 4rg + 0..3, so that its q and k reads from shared
// memory are 128 contiguous bytes per 8 lanes); the two sums per token are 3
// shuffles within the lane's group of 8. q, k (normalised) and the gates come
// from delta_qkg. The block stages TC tokens' q, k, v and gates into shared
// memory with cp.async while it computes the TC before (two buffers, two
// barriers per TC tokens): the loads' latency is out of the chain from token
// to token. dst gets the read-out before the gated RMSNorm, which couples
// the columns of a head and runs next (delta_gnorm).
template <int R>
__device__ __forceinline__ void delta_cols_body(const float* __restrict__ conv, const float2* __restrict__ gates,
                                                float* __restrict__ state, float* __restrict__ dst, int T, int KH, int VH, int VD) {
  constexpr int KD = 8 * R, TC = KD >= 256 ? 8 : 16, QS = TC * KD, VS = TC * 16, BUF = 2 * QS + VS + 2 * TC;
  extern __shared__ float4 delta_sm4[];
  float* sm = reinterpret_cast<float*>(delta_sm4);
  const int tid = threadIdx.x, lane = tid & 31, rg = lane & 7;
  const int bph = VD / 16;  // blocks per head
  const int h = blockIdx.x / bph, jb = (blockIdx.x % bph) * 16;
  const int jl = 4 * (tid >> 5) + (lane >> 3), j = jb + jl;
  const int kh = h / (VH / KH);
  const int C = 2 * KH * KD + VH * VD;
  float* Sg = state + (size_t)h * KD * VD;
  float s[R];
#pragma unroll
  for (int i = 0; i < R / 4; i++)
#pragma unroll
    for (int c = 0; c < 4; c++) s[4 * i + c] = Sg[(size_t)(32 * i + 4 * rg + c) * VD + j];
  pdl_wait();  // the state is this layer's own; see delta2_body
  auto stage = [&](int c0, int b) {
    float* B = sm + b * BUF;
    const int n = min(TC, T - c0);
    for (int x = tid; x < n * (KD / 4); x += blockDim.x) {
      const int t = x / (KD / 4), o = (x % (KD / 4)) * 4;
      const float* row = conv + (size_t)(c0 + t) * C;
      cp_async16(B + t * KD + o, row + kh * KD + o);
      cp_async16(B + QS + t * KD + o, row + KH * KD + kh * KD + o);
    }
    for (int x = tid; x < n * 4; x += blockDim.x) {
      const int t = x / 4, o = (x % 4) * 4;
      cp_async16(B + 2 * QS + t * 16 + o, conv + (size_t)(c0 + t) * C + 2 * KH * KD + h * VD + jb + o);
    }
    for (int x = tid; x < n; x += blockDim.x) cp_async8(B + 2 * QS + VS + 2 * x, gates + (size_t)(c0 + x) * VH + h);
    cp_async_commit();
  };
  stage(0, 0);
  for (int c0 = 0, b = 0; c0 < T; c0 += TC, b ^= 1) {
    if (c0 + TC < T) stage(c0 + TC, b ^ 1);
    else cp_async_commit();  // an empty group: wait1 still means chunk c0 has landed
    cp_async_wait1();
    __syncthreads();
    const float* B = sm + b * BUF;
    const int n = min(TC, T - c0);
    for (int t = 0; t < n; t++) {
      float4 q[R / 4], k[R / 4];
#pragma unroll
      for (int i = 0; i < R / 4; i++) {
        q[i] = *reinterpret_cast<const float4*>(B + t * KD + 32 * i + 4 * rg);
        k[i] = *reinterpret_cast<const float4*>(B + QS + t * KD + 32 * i + 4 * rg);
      }
      const float v = B[2 * QS + t * 16 + jl];
      const float2 g = *reinterpret_cast<const float2*>(B + 2 * QS + VS + 2 * t);
      const float alpha = g.x, beta = g.y;
      float m0 = 0.f, m1 = 0.f;
#pragma unroll
      for (int i = 0; i < R / 4; i++) {
        s[4 * i] *= alpha; s[4 * i + 1] *= alpha; s[4 * i + 2] *= alpha; s[4 * i + 3] *= alpha;
        m0 = fmaf(s[4 * i], k[i].x, m0);
        m1 = fmaf(s[4 * i + 1], k[i].y, m1);
        m0 = fmaf(s[4 * i + 2], k[i].z, m0);
        m1 = fmaf(s[4 * i + 3], k[i].w, m1);
      }
      const float m = sum8(m0 + m1);
      const float dk = (v - m) * beta;
      float o0 = 0.f, o1 = 0.f;
#pragma unroll
      for (int i = 0; i < R / 4; i++) {
        s[4 * i] = fmaf(k[i].x, dk, s[4 * i]);
        s[4 * i + 1] = fmaf(k[i].y, dk, s[4 * i + 1]);
        s[4 * i + 2] = fmaf(k[i].z, dk, s[4 * i + 2]);
        s[4 * i + 3] = fmaf(k[i].w, dk, s[4 * i + 3]);
        o0 = fmaf(s[4 * i], q[i].x, o0);
        o1 = fmaf(s[4 * i + 1], q[i].y, o1);
        o0 = fmaf(s[4 * i + 2], q[i].z, o0);
        o1 = fmaf(s[4 * i + 3], q[i].w, o1);
      }
      const float o = sum8(o0 + o1);
      if (rg == 0) dst[(size_t)(c0 + t) * VH * VD + (size_t)h * VD + j] = o;
    }
    __syncthreads();  // buffer b is read: chunk c0 + 2·TC may land in it
  }
#pragma unroll
  for (int i = 0; i < R / 4; i++)
#pragma unroll
    for (int c = 0; c < 4; c++) Sg[(size_t)(32 * i + 4 * rg + c) * VD + j] = s[4 * i + c];
}

#define DELTAC_ARGS const float *__restrict__ conv, const float2 *__restrict__ gates, float *__restrict__ state, float *__restrict__ dst, int T, int KH, int VH, int VD
#define DELTAC(R) \
  extern "C" __global__ void __launch_bounds__(128) delta_cols_##R(DELTAC_ARGS) { delta_cols_body<R>(conv, gates, state, dst, T, KH, VH, VD); }
DELTAC(4)
DELTAC(8)
DELTAC(16)
DELTAC(32)

// delta_gnorm: the gated RMSNorm after delta_cols, one warp per (token,
// head) row of VD values, in place: dst = w ⊙ o/rms(o) ⊙ silu(z).
extern "C" __global__ void delta_gnorm(float* dst, const float* z, const float* normW, int rows, int VD, float eps) {
  pdl_wait();
  const int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  float* d = dst + (size_t)row * VD;
  const float* zr = z + (size_t)row * VD;
  float ss = 0.f;
  for (int j = lane; j < VD; j += 32) ss = fmaf(d[j], d[j], ss);
  ss = warp_sum(ss);
  const float r = rsqrtf(ss / (float)VD + eps);
  for (int j = lane; j < VD; j += 32) d[j] = normW[j] * d[j] * r * silu(zr[j]);
}

// ---- MoE ----

// router_topk: one warp per token; logits [T, E] → top-K ids and weights
// renormalised over the K (= softmax restricted to the chosen experts).
// topk_warp (one warp): top-K ids and weights of one token's logits row,
// renormalised over the K (= softmax restricted to the chosen experts). The
// logits are read with __ldcg (other blocks of a fused kernel wrote them).
__device__ __forceinline__ void topk_warp(const float* logits, int E, int K, int* ids, float* wts, float* sl) {
  const int lane = threadIdx.x & 31;
  for (int e = lane; e < E; e += 32) sl[e] = __ldcg(logits + e);
  __syncwarp();
  float top = 0.f, sum = 0.f;
  for (int k = 0; k < K; k++) {
    float bv = -FINF;
    int bi = 0x7fffffff;
    for (int e = lane; e < E; e += 32) {
      const float v = sl[e];
      if (v > bv || (v == bv && e < bi)) { bv = v; bi = e; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    if (k == 0) top = bv;
    const float p = expf(bv - top);
    sum += p;
    if (lane == 0) { ids[k] = bi; wts[k] = p; sl[bi] = -FINF; }
    __syncwarp();
  }
  __syncwarp();
  if (lane < K) wts[lane] /= sum;
}

// topk_override (benchmarks' routing override, word 21 of a top-K
// descriptor): after topk_warp, warp 0 replaces the K ids by those the host
// wrote to pinned memory at ov (read through unified addressing, uncached:
// the host rewrites them for every token), keeping the router's weights.
__device__ __forceinline__ void topk_override(const int* ov, int K, int* ids) {
  const int lane = threadIdx.x & 31;
  __syncwarp();
  if (ov != nullptr && lane < K) ids[lane] = __ldcv(ov + lane);
}

// router_topk: one warp per token; logits [T, E] → top-K ids and weights.
extern "C" __global__ void router_topk(const float* logits, int E, int K, int* ids, float* wts) { pdl_wait();
  extern __shared__ float sl[];  // E
  const int t = blockIdx.x;
  topk_warp(logits + (size_t)t * E, E, K, ids + t * K, wts + t * K, sl);
}

struct ProjOff { long long w, s, b; };

// moe_gu: h[p] = silu(G_e x_t) ⊙ (U_e x_t) for pair p = t0*K + blockIdx.y,
// e = ids[p], expert bytes at table[e]. One warp per 2 rows of I.
template <int BITS, bool VEC>
__device__ __forceinline__ void moe_gu_body(const u64* table, const int* ids, const float* x, float* hbuf,
                                            int I, int Hd, int group, int K, int t0, ProjOff g, ProjOff u) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int r0 = warp * 2;
  if (r0 >= I) return;
  const int p = t0 * K + blockIdx.y;
  const int tok = p / K;
  const char* base = reinterpret_cast<const char*>(table[ids[p]]);
  const int nr = min(2, I - r0);
  float ag[2][1] = {{0.f}, {0.f}}, au[2][1] = {{0.f}, {0.f}};
  const float* xt = x + (size_t)tok * Hd;
  qdot<BITS, 2, 1, VEC>((const u32*)(base + g.w), (const u16*)(base + g.s), (const u16*)(base + g.b), Hd, group, r0, nr, xt, 1, ag);
  qdot<BITS, 2, 1, VEC>((const u32*)(base + u.w), (const u16*)(base + u.s), (const u16*)(base + u.b), Hd, group, r0, nr, xt, 1, au);
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const float gv = warp_sum(ag[r][0]), uv = warp_sum(au[r][0]);
    if ((threadIdx.x & 31) == 0 && r < nr) hbuf[(size_t)p * I + r0 + r] = silu(gv) * uv;
  }
}

// moe_dn: dst[t, r] = Σ_k w_k · D_{e_k}[r]·h[t*K+k] for t = t0 + blockIdx.y.
template <int BITS, bool VEC>
__device__ __forceinline__ void moe_dn_body(const u64* table, const int* ids, const float* wts, const float* hbuf,
                                            float* dst, int Hd, int I, int group, int K, int t0, ProjOff d) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int r0 = warp * 4;
  if (r0 >= Hd) return;
  const int t = t0 + blockIdx.y;
  const int nr = min(4, Hd - r0);
  float tot[4] = {0.f, 0.f, 0.f, 0.f};
  for (int k = 0; k < K; k++) {
    const int p = t * K + k;
    const char* base = reinterpret_cast<const char*>(table[ids[p]]);
    float acc[4][1] = {{0.f}, {0.f}, {0.f}, {0.f}};
    qdot<BITS, 4, 1, VEC>((const u32*)(base + d.w), (const u16*)(base + d.s), (const u16*)(base + d.b), I, group, r0, nr, hbuf + (size_t)p * I, 1, acc);
    const float wk = wts[p];
#pragma unroll
    for (int r = 0; r < 4; r++) tot[r] = fmaf(wk, acc[r][0], tot[r]);
  }
#pragma unroll
  for (int r = 0; r < 4; r++) {
    const float v = warp_sum(tot[r]);
    if ((threadIdx.x & 31) == 0 && r < nr) dst[(size_t)t * Hd + r0 + r] = v;
  }
}

#define MOE_GU_ARGS const u64 *table, const int *ids, const float *x, float *hbuf, int I, int Hd, int group, int K, int t0, long long gw, long long gs, long long gb, long long uw, long long us, long long ub
#define MOE_DN_ARGS const u64 *table, const int *ids, const float *wts, const float *hbuf, float *dst, int Hd, int I, int group, int K, int t0, long long dw, long long ds, long long db
#define MOE(BITS)                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(128) moe_gu##BITS##v(MOE_GU_ARGS) { pdl_wait(); moe_gu_body<BITS, true>(table, ids, x, hbuf, I, Hd, group, K, t0, ProjOff{gw, gs, gb}, ProjOff{uw, us, ub}); }   \
  extern "C" __global__ void __launch_bounds__(128) moe_gu##BITS##s(MOE_GU_ARGS) { pdl_wait(); moe_gu_body<BITS, false>(table, ids, x, hbuf, I, Hd, group, K, t0, ProjOff{gw, gs, gb}, ProjOff{uw, us, ub}); }  \
  extern "C" __global__ void __launch_bounds__(128) moe_dn##BITS##v(MOE_DN_ARGS) { pdl_wait(); moe_dn_body<BITS, true>(table, ids, wts, hbuf, dst, Hd, I, group, K, t0, ProjOff{dw, ds, db}); } \
  extern "C" __global__ void __launch_bounds__(128) moe_dn##BITS##s(MOE_DN_ARGS) { pdl_wait(); moe_dn_body<BITS, false>(table, ids, wts, hbuf, dst, Hd, I, group, K, t0, ProjOff{dw, ds, db}); }
MOE(2)
MOE(4)
MOE(8)
