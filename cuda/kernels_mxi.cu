// ---- qmxi: the 4-bit decode matvec on the integer tensor cores ----
//
// qmx's descriptor and semantics (norm, swiglu, gate, top-K, the items'
// epilogues) for 4-bit weights in groups of 64, with the dot products done
// by mma.sync m16n8k32 (u8 codes × s8 parts of x, int32 sums, exact). The
// block's prologue quantizes x (normed first with mode norm) into four
// signed 8-bit parts, x ≈ sx·(p0 + p1/128 + p2/128² + p3/128³) with
// sx = max|x|/127 (29 bits below the largest |x|; the int32 sums are exact,
// so every result is within float32 rounding of the CUDA-core kernels), and
// stores them in shared memory in the MMA's B fragment order; Σx per group
// goes beside them (the biases' term). A 32-bit word of 8 codes becomes the
// two A registers of a thread with one mask and one shift+mask (even codes,
// odd codes: the k order within a group is permuted, x's parts follow it).
//
// Block: NW warps = one row group; a tile is 16 rows (MMA M; with swiglu 8
// rows of gate as MMA rows 0-7 and the same 8 rows of up as 8-15), warp w
// takes the columns of groups [w·GW, (w+1)·GW) (in = 64·NW·GW). Thread
// (g = lane/4, t = lane%4) loads words 2t, 2t+1 of each group of rows g and
// g+8 (MMA 0 and 1 of the group; the "c" kernels load 16 bytes of a group
// pair and exchange halves, qmxi_pair), and the GW scales and biases of both
// rows. The prologue reads x once (its norm's Σx² and max|x| in one block
// reduction); the norm weights load before pdl_wait with the first tile.
// Per group the two MMAs' int32 columns (x parts 0-3 in columns 0-3, 4-7
// zero) are scaled into float accumulators; at the tile's end the parts
// are weighted and added (lanes t = 0, 1 hold columns 0-3) and the warps'
// sums meet in shared memory as in qmx (fixed order: deterministic).
// Extra descriptor words: 20 = number of tiles; 22 = a tile counter (0:
// none): block b takes tile b first and then, when there are more tiles
// than blocks, whichever tile the counter hands out next (qmxi_grab).
// Dynamic shared memory:
// 4·in bytes of parts, in/64 floats of Σx, then top-K's E floats.

// imma_u8s8: c += a·b (m16n8k32, u8 × s8, int32 accumulate).
__device__ __forceinline__ void imma_u8s8(int (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// ld_words: n consecutive 32-bit words from p (16-byte aligned when n % 4 == 0,
// 8-byte when n % 2 == 0).
template <int N>
__device__ __forceinline__ void ld_words(const u32* __restrict__ p, u32 (&d)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i / 4);
      d[i] = v.x; d[i + 1] = v.y; d[i + 2] = v.z; d[i + 3] = v.w;
    }
  } else if constexpr (N % 2 == 0) {
#pragma unroll
    for (int i = 0; i < N; i += 2) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(p) + i / 2);
      d[i] = v.x; d[i + 1] = v.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; i++) d[i] = __ldg(p + i);
  }
}

template <int GW>
struct QmxiTile {
  uint2 qa[GW], qb[GW];  // rows g, g+8: words 2t, 2t+1 of each group
  u32 sa[GW / 2], sb[GW / 2], ba[GW / 2], bb[GW / 2];  // bf16 pairs
};

// qmxi_rows: the rows of tile t (items as qmx_load; clamped rows are read
// again, their results dropped): row pointers of MMA rows g (a) and g+8 (b).
__device__ __forceinline__ void qmxi_rows(const long long* __restrict__ D, int t, int g, const long long*& Ia, const long long*& Ib, size_t& ra,
                                          size_t& rb) {
  if ((int)D[3] & 2) {  // swiglu: gate rows t·8 + g as a, the same rows of up as b
    Ia = D + QB_ITEM;
    Ib = D + QB_ITEM + QB_STRIDE;
    ra = rb = (size_t)min(t * 8 + g, (int)Ia[7] - 1);
    return;
  }
  const int n = (int)D[0];
  int it = 0;
  for (int i = 1; i < n; i++)
    if ((int)D[QB_ITEM + QB_STRIDE * i + 8] <= t) it = i;
  Ia = Ib = D + QB_ITEM + QB_STRIDE * it;
  const int r0 = (t - (int)Ia[8]) * 16, out = (int)Ia[7];
  ra = (size_t)min(r0 + g, out - 1);
  rb = (size_t)min(r0 + g + 8, out - 1);
}

// qmxi_pair: a quad's 16-byte loads of two groups (lane t: words 4t..4t+3
// of the pair) exchanged with lane t^2 so that each lane holds two words of
// each group: t = 0: words 0, 1 of both; 1: 4, 5; 2: 2, 3; 3: 6, 7.
__device__ __forceinline__ void qmxi_pair(uint4 v, int t4, uint2& lo, uint2& hi) {
  const bool a = t4 < 2;
  const u32 r0 = __shfl_xor_sync(0xffffffffu, a ? v.z : v.x, 2), r1 = __shfl_xor_sync(0xffffffffu, a ? v.w : v.y, 2);
  lo = a ? make_uint2(v.x, v.y) : make_uint2(r0, r1);
  hi = a ? make_uint2(r0, r1) : make_uint2(v.z, v.w);
}

// qmxi_load: tile t's codes, scales and biases of this lane. CO: 16-byte
// loads of group pairs, exchanged (qmxi_pair); else 8-byte loads, lane t
// words 2t, 2t+1 of each group.
template <int GW, bool CO>
__device__ __forceinline__ void qmxi_load(const long long* __restrict__ D, int t, int g, int t4, int g0, int in, QmxiTile<GW>& T) {
  const long long *Ia, *Ib;
  size_t ra, rb;
  qmxi_rows(D, t, g, Ia, Ib, ra, rb);
  const int wpr = in / 8, gpr = in / 64;
  if constexpr (CO) {
    const uint4* Wa = reinterpret_cast<const uint4*>((const u32*)Ia[0] + ra * wpr + g0 * 8) + t4;
    const uint4* Wb = reinterpret_cast<const uint4*>((const u32*)Ib[0] + rb * wpr + g0 * 8) + t4;
    uint4 va[GW / 2], vb[GW / 2];
#pragma unroll
    for (int j = 0; j < GW / 2; j++) {
      va[j] = __ldg(Wa + 4 * j);
      vb[j] = __ldg(Wb + 4 * j);
    }
#pragma unroll
    for (int j = 0; j < GW / 2; j++) {
      qmxi_pair(va[j], t4, T.qa[2 * j], T.qa[2 * j + 1]);
      qmxi_pair(vb[j], t4, T.qb[2 * j], T.qb[2 * j + 1]);
    }
  } else {
    const uint2* Wa = reinterpret_cast<const uint2*>((const u32*)Ia[0] + ra * wpr + g0 * 8) + t4;
    const uint2* Wb = reinterpret_cast<const uint2*>((const u32*)Ib[0] + rb * wpr + g0 * 8) + t4;
#pragma unroll
    for (int j = 0; j < GW; j++) {
      T.qa[j] = __ldg(Wa + 4 * j);
      T.qb[j] = __ldg(Wb + 4 * j);
    }
  }
  ld_words<GW / 2>(reinterpret_cast<const u32*>((const u16*)Ia[1] + ra * gpr + g0), T.sa);
  ld_words<GW / 2>(reinterpret_cast<const u32*>((const u16*)Ib[1] + rb * gpr + g0), T.sb);
  ld_words<GW / 2>(reinterpret_cast<const u32*>((const u16*)Ia[2] + ra * gpr + g0), T.ba);
  ld_words<GW / 2>(reinterpret_cast<const u32*>((const u16*)Ib[2] + rb * gpr + g0), T.bb);
}

// bf16 element j of a packed pair array.
__device__ __forceinline__ float bf16p(u32 v, int j) { return __uint_as_float((j & 1) ? (v & 0xffff0000u) : (v << 16)); }

// qmxi_dot: this warp's sums of its tile rows g (va) and g+8 (vb) over its
// groups, complete in lane t = 0 of each quad.
template <int GW>
__device__ __forceinline__ void qmxi_dot(const QmxiTile<GW>& A, const uint2* __restrict__ xq, const float* __restrict__ xsum, int g, int t4,
                                         int g0, float cw0, float cw1, float& va, float& vb) {
  float acc[4] = {0.f, 0.f, 0.f, 0.f}, bsa = 0.f, bsb = 0.f;
#pragma unroll
  for (int j = 0; j < GW; j++) {
    const int G = g0 + j;
    int c[4] = {0, 0, 0, 0};
#pragma unroll
    for (int m = 0; m < 2; m++) {
      const u32 wa = m ? A.qa[j].y : A.qa[j].x, wb = m ? A.qb[j].y : A.qb[j].x;
      const uint2 bv = g < 4 ? xq[((G * 2 + m) * 4 + g) * 4 + t4] : make_uint2(0u, 0u);
      imma_u8s8(c, wa & 0x0f0f0f0fu, wb & 0x0f0f0f0fu, (wa >> 4) & 0x0f0f0f0fu, (wb >> 4) & 0x0f0f0f0fu, bv.x, bv.y);
    }
    const float sa = bf16p(A.sa[j / 2], j), sb = bf16p(A.sb[j / 2], j), xs = xsum[G];
    acc[0] = fmaf(sa, (float)c[0], acc[0]);
    acc[1] = fmaf(sa, (float)c[1], acc[1]);
    acc[2] = fmaf(sb, (float)c[2], acc[2]);
    acc[3] = fmaf(sb, (float)c[3], acc[3]);
    bsa = fmaf(bf16p(A.ba[j / 2], j), xs, bsa);
    bsb = fmaf(bf16p(A.bb[j / 2], j), xs, bsb);
  }
  va = fmaf(acc[0], cw0, acc[1] * cw1) + (t4 == 0 ? bsa : 0.f);
  vb = fmaf(acc[2], cw0, acc[3] * cw1) + (t4 == 0 ? bsb : 0.f);
  va += __shfl_xor_sync(0xffffffffu, va, 1);
  vb += __shfl_xor_sync(0xffffffffu, vb, 1);
  va += __shfl_xor_sync(0xffffffffu, va, 2);
  vb += __shfl_xor_sync(0xffffffffu, vb, 2);
}

// qmxi_part: the signed 8-bit parts of v (|v| ≤ 127.5) in bytes of four
// words: v ≈ p0 + p1/128 + p2/128² + p3/128³.
__device__ __forceinline__ void qmxi_part(float v, int byte, u32 (&p)[4]) {
#pragma unroll
  for (int k = 0; k < 4; k++) {
    const float r = rintf(v);
    p[k] |= ((u32)(int)r & 0xffu) << (8 * byte);
    v = (v - r) * 128.f;
  }
}

// qmxi_prologue: x (normed with mode norm; block 0 writes the normed row)
// into the parts and group sums in shared memory; returns the column
// weights of this lane's two MMA columns (parts 2t, 2t+1; 0 for t ≥ 2).
// Thread tid takes words (8 columns) tid + k·blockDim, k < XW (in = 8·XW·
// blockDim), held in registers: x is read once, its norm's Σx² and the
// largest |x| meet in one block reduction. gv: the norm weights of those
// words (static: loaded before pdl_wait; unread without mode norm).
template <int XW>
__device__ __forceinline__ void qmxi_prologue(const long long* __restrict__ D, uint2* xq, float* xsum, float* sh, int t4, bool co,
                                              const float4 (&gv)[XW][2], float& cw0, float& cw1) {
  const int tid = threadIdx.x, nt = blockDim.x, in = (int)D[1], mode = (int)D[3];
  const float4* x = reinterpret_cast<const float4*>((const float*)D[QB_ITEM + 3]);
  float v[XW][8];
#pragma unroll
  for (int k = 0; k < XW; k++) {
    const int wi = tid + k * nt;
    const float4 a = x[2 * wi], b = x[2 * wi + 1];  // written by the kernel before: not __ldg
    v[k][0] = a.x; v[k][1] = a.y; v[k][2] = a.z; v[k][3] = a.w; v[k][4] = b.x; v[k][5] = b.y; v[k][6] = b.z; v[k][7] = b.w;
  }
  float ss = 0.f, mx = 0.f;
#pragma unroll
  for (int k = 0; k < XW; k++) {
    const float g[8] = {gv[k][0].x, gv[k][0].y, gv[k][0].z, gv[k][0].w, gv[k][1].x, gv[k][1].y, gv[k][1].z, gv[k][1].w};
#pragma unroll
    for (int j = 0; j < 8; j++) {
      ss = fmaf(v[k][j], v[k][j], ss);
      if (mode & 1) v[k][j] *= g[j];
      mx = fmaxf(mx, fabsf(v[k][j]));
    }
  }
  // one block reduction of both: Σx² (the norm) and max |x·γ|
  {
    const int lane = tid & 31, w = tid >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      ss += __shfl_xor_sync(0xffffffffu, ss, o);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    }
    __syncthreads();  // sh may still be read by a previous reduction
    if (lane == 0) {
      sh[w] = ss;
      sh[16 + w] = mx;
    }
    __syncthreads();
    const int nw = nt >> 5;  // ≤ 16 warps
    ss = lane < nw ? sh[lane] : 0.f;
    mx = lane < nw ? sh[16 + lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      ss += __shfl_xor_sync(0xffffffffu, ss, o);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    }
  }
  const float rn = (mode & 1) ? rsqrtf(ss / (float)in + __int_as_float((int)D[4])) : 1.f;
  mx *= rn;
  const float inv = mx > 0.f ? 127.f / mx : 0.f, sxv = mx / 127.f;
  float* ntp = (mode & 1) && blockIdx.x == 0 ? (float*)D[7] : nullptr;
#pragma unroll
  for (int k = 0; k < XW; k++) {
    const int wi = tid + k * nt;
    float s = 0.f;
    u32 pe[4] = {0u, 0u, 0u, 0u}, po[4] = {0u, 0u, 0u, 0u};  // even / odd columns
#pragma unroll
    for (int j = 0; j < 8; j++) {
      v[k][j] *= rn;
      s += v[k][j];
      qmxi_part(v[k][j] * inv, j / 2, (j & 1) ? po : pe);
    }
    if (ntp != nullptr) {
      reinterpret_cast<float4*>(ntp)[2 * wi] = make_float4(v[k][0], v[k][1], v[k][2], v[k][3]);
      reinterpret_cast<float4*>(ntp)[2 * wi + 1] = make_float4(v[k][4], v[k][5], v[k][6], v[k][7]);
    }
    // the group's Σx: its 8 words are 8 consecutive lanes
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 4);
    // the lane holding the word in MMA m of its group (qmxi_load's layouts)
    const int G = wi / 8, m = wi & 1, q = (wi & 7) >> 1, tq = co ? ((q & 1) << 1) | (q >> 1) : q;
    if ((wi & 7) == 0) xsum[G] = s;
#pragma unroll
    for (int p = 0; p < 4; p++) xq[((G * 2 + m) * 4 + p) * 4 + tq] = make_uint2(pe[p], po[p]);
  }
  const float c0 = sxv, c1 = c0 * (1.f / 128.f), c2 = c1 * (1.f / 128.f), c3 = c2 * (1.f / 128.f);
  cw0 = t4 == 0 ? c0 : t4 == 1 ? c2 : 0.f;
  cw1 = t4 == 0 ? c1 : t4 == 1 ? c3 : 0.f;
  __syncthreads();
}

// qmxi_grab: the tile after the grid's first ones that the counter hands
// out next, ntiles when none is left. Every block grabs until it gets none,
// so a launch makes exactly ntiles grabs (ntiles − grid that succeed, one
// that fails per block) and the one that receives ntiles − 1 is the last:
// it resets the counter for the next launch (which reads it only after this
// one has ended).
__device__ __forceinline__ int qmxi_grab(unsigned int* ctr, int ntiles) {
  const unsigned int r = atomicAdd(ctr, 1u);
  if (r == (unsigned int)ntiles - 1) atomicExch(ctr, 0u);
  return min((int)r + (int)gridDim.x, ntiles);
}

template <int NW, int GW, bool PF, bool CO>
__device__ __forceinline__ void qmxi_body(const long long* __restrict__ D) {
  extern __shared__ float qsm[];  // parts (in floats' worth), Σx (in/64), top-K (E)
  __shared__ float red[2][NW][16];
  __shared__ float sh[32];
  __shared__ int last, nxt[2];
  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const long long t00 = clock64();
  const int in = (int)D[1], ntiles = (int)D[20], g0 = w * GW, mode = (int)D[3];
  const int pc = (mode & 8) ? 1 : (mode & 2) ? 2 : (mode & 1) ? 3 : 4;  // probe class: router, gate/up, normed, plain
  QmxiTile<GW> A;
  int t = blockIdx.x;
  if (t < ntiles) qmxi_load<GW, CO>(D, t, g, t4, g0, in, A);
  const int ovid = qmx_ovid(D);
  constexpr int XW = GW / 4;  // words of x per thread: in / (8·32·NW)
  float4 gv[XW][2];
  if (mode & 1) {
    const float4* nw = reinterpret_cast<const float4*>((const float*)D[6]);
#pragma unroll
    for (int k = 0; k < XW; k++) {
      gv[k][0] = __ldg(nw + 2 * (tid + k * 32 * NW));
      gv[k][1] = __ldg(nw + 2 * (tid + k * 32 * NW) + 1);
    }
  }
  pdl_wait();  // weights, norm weights and descriptor are static: loaded before the previous kernel ends
  probe(t00, pc, 0);
  unsigned int* ctr = (unsigned int*)D[22];
  const bool dyn = ctr != nullptr && ntiles > (int)gridDim.x;  // then every block has a first tile
  int grab = 0;
  if (dyn && tid == 0) grab = qmxi_grab(ctr, ntiles);  // its round trip overlaps the prologue
  uint2* xq = reinterpret_cast<uint2*>(qsm);
  float* xsum = qsm + in;
  float cw0, cw1;
  qmxi_prologue<XW>(D, xq, xsum, sh, t4, CO, gv, cw0, cw1);
  probe(t00, pc, 1);
  const float gam = qmx_gamma<4>(D, sh);
  probe(t00, pc, 2);
  if (dyn) {
    if (tid == 0) nxt[0] = grab;
    __syncthreads();
  }
  for (int buf = 0; t < ntiles; buf ^= 1) {
    QmxiTile<GW> Bt;
    // the next tile: handed out one tile ahead (nxt[buf], published by the
    // previous tile's barrier), or the static stride
    const int tn = dyn ? nxt[buf] : t + gridDim.x;
    if (dyn && tid == 0 && tn < ntiles) grab = qmxi_grab(ctr, ntiles);
    if (PF && tn < ntiles) qmxi_load<GW, CO>(D, tn, g, t4, g0, in, Bt);
    float va, vb;
    qmxi_dot<GW>(A, xq, xsum, g, t4, g0, cw0, cw1, va, vb);
    if (t4 == 0) {
      red[buf][w][g] = va;
      red[buf][w][g + 8] = vb;
    }
    if (dyn && tid == 0 && tn < ntiles) nxt[buf ^ 1] = grab;
    __syncthreads();
    qmx_store<16, 1, NW>(D, t, red[buf], gam);
    if (t == (int)blockIdx.x) probe(t00, pc, 3);
    if (PF) {
      A = Bt;
    } else if (tn < ntiles) {
      qmxi_load<GW, CO>(D, tn, g, t4, g0, in, A);
    }
    t = tn;
  }
  probe(t00, pc, 4);
  if (mode & 8) qmx_topk(D, xsum + in / 64, &last, ovid);
  probe(t00, pc, 5);
  probe_exit(pc);
}

// qmxi4_<NW>_<GW><c?><p|n>: NW warps, GW groups per warp (in = 64·NW·GW),
// c = 16-byte loads of group pairs (qmxi_pair), p = next tile prefetched.
#define QMXI(NW, GW)                                                                                                                    \
  extern "C" __global__ void __launch_bounds__(32 * NW) qmxi4_##NW##_##GW##p(const long long* D) { qmxi_body<NW, GW, true, false>(D); }  \
  extern "C" __global__ void __launch_bounds__(32 * NW) qmxi4_##NW##_##GW##n(const long long* D) { qmxi_body<NW, GW, false, false>(D); } \
  extern "C" __global__ void __launch_bounds__(32 * NW) qmxi4_##NW##_##GW##cp(const long long* D) { qmxi_body<NW, GW, true, true>(D); }  \
  extern "C" __global__ void __launch_bounds__(32 * NW) qmxi4_##NW##_##GW##cn(const long long* D) { qmxi_body<NW, GW, false, true>(D); }
QMXI(8, 8)
QMXI(16, 8)
QMXI(8, 16)
QMXI(4, 4)
QMXI(4, 8)
QMXI(4, 16)
