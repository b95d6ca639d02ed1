package cuda

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"unsafe"
)

// qmx (kernels_mx.cu) is the persistent form of the fused decode matvec:
// same descriptor as qmvb, x in registers, a grid of as many blocks as fit
// on the GPU at once walking tiles of rows, the next tile's loads issued
// before the current one is computed.

// qmxShapes are the kernels built: bits, threads per row, chunks per thread
// (tile sizes U: qmxTiles; threads per block: max(128, threads per row)).
// The first match wins (qmxPlan): rows of 256 chunks take 256 threads of one
// chunk each (H200, 4096×8192: 1369 GB/s) before 128 threads of two (1257
// GB/s; their 64-register x slice leaves room for 2 blocks per SM);
// FMOE_CUDA_QMX256=0 picks the latter.
var qmxShapes = []struct{ bits, tpr, cpt int }{
	{4, 256, 1}, {8, 256, 1},
	{4, 128, 1}, {4, 128, 2}, {4, 64, 1}, {4, 32, 1},
	{8, 128, 1}, {8, 128, 2}, {8, 128, 4}, {8, 64, 1}, {8, 32, 1},
	{2, 128, 1}, {2, 64, 1}, {2, 32, 1},
}

func qmxTiles(bits int) []int {
	if bits == 4 {
		return []int{8, 4}
	}
	return []int{4}
}

// qmxMoEShapes are the expert kernels built (qmxe gate/up, qmxd down):
// bits, threads per row, chunks per thread, tile U. Rows of 32, 64 or 128
// chunks (4-bit: 1024-4096 columns); wider expert rows (whose plan is 256
// threads) keep moe_gu/moe_dn.
var qmxMoEShapes = [][4]int{
	{4, 128, 1, 8}, {4, 128, 1, 4}, {4, 32, 1, 8}, {4, 32, 1, 4}, {4, 32, 1, 2}, {4, 64, 1, 4},
	{8, 64, 1, 4}, {8, 128, 1, 4},
	{2, 128, 1, 4}, {2, 64, 1, 4}, {2, 32, 1, 4},
}

// qmxMoEKernel returns the qmxe/qmxd kernel for a projection of in columns
// (prefix "qmxe" or "qmxd"), preferring tile u; "" when none is built.
func qmxMoEKernel(prefix string, bits, group, in, u int) (name string, tpr, tile int) {
	tp, cpt, ok := qmxPlan(bits, group, in)
	if !ok {
		return "", 0, 0
	}
	for _, pass := range []bool{true, false} {
		for _, s := range qmxMoEShapes {
			if s[0] == bits && s[1] == tp && s[2] == cpt && (!pass || s[3] == u) {
				return fmt.Sprintf("%s%d_%d_%d_%d", prefix, bits, tp, cpt, s[3]), tp, s[3]
			}
		}
	}
	return "", 0, 0
}

// QMXExperts runs the decode (one token) expert projections as qmxe (gate
// and up) and qmxs (down with the routing weights; qmxd, the walking form,
// with FMOE_CUDA_QMXD=walk and K ≤ QMXDownMaxK) when QMX is on;
// FMOE_CUDA_QMXE=0 turns it off, FMOE_CUDA_QMXD_U picks the down
// projection's tile (2, 4, 8; default 8). On an H200 (397B shapes, K=4):
// qmxe 14.6 µs against moe_gu4k's 20.0; qmxd 14.9 µs (tile 4) against
// moe_dnc4's 13.9, and at K=10 qmxd (10 experts per tile in sequence) was
// slower than moe_dn + moe_combine (116.5 → 104.9 tok/s); qmxs (round 8,
// docs/benchmarks.md) 8.5 µs at K=4, and K=10 decode 130.9 → 159.1 tok/s
// against moe_dn + moe_combine.
var QMXExperts = true

// QMXDownMaxK is the largest K whose down projections run as qmxd (the
// walking form; qmxs takes any K).
var QMXDownMaxK = 4

// QMXSplitDown runs the one-token down projections as qmxs (kernels_mx.cu:
// one block per tile and expert, the experts' sums added by each tile's last
// block) instead of qmxd (one block per tile walking its experts in turn);
// FMOE_CUDA_QMXD=walk picks qmxd, =split qmxs.
var QMXSplitDown = true

func qmxSplitDown() bool { return envChoice("FMOE_CUDA_QMXD", "split", "walk", QMXSplitDown) }

// envChoice reads a two-valued switch: true when the environment variable
// name is on, false when it is off, def otherwise.
func envChoice(name, on, off string, def bool) bool {
	switch os.Getenv(name) {
	case on:
		return true
	case off:
		return false
	}
	return def
}

func qmxExperts() bool {
	if u, _ := qmxVariant(); u == 0 {
		return false
	}
	if v, ok := os.LookupEnv("FMOE_CUDA_QMXE"); ok {
		return v != "0"
	}
	return QMXExperts
}

// qmxMaxK is QMX_MAXK (kernels_mx.cu): the most experts per token.
const qmxMaxK = 32

// qmxEx is the plan of one token's expert kernels: qmxe (gate/up) and, when
// dn is set, qmxd (down with the routing weights).
type qmxEx struct {
	gu, dn      string
	split       bool // dn is a qmxs kernel
	gtpr, gtile int
	dtpr, dtile int
}

// qmxPlanExperts returns the plan for K experts of c's layout; false: qmx
// experts do not apply.
func (c *expertCache) qmxPlanExperts(K int) (p qmxEx, ok bool) {
	l := c.layout
	if !c.fast || !qmxExperts() || K > qmxMaxK || l.Up.Bits != l.Gate.Bits {
		return p, false
	}
	p.gu, p.gtpr, p.gtile = qmxMoEKernel("qmxe", l.Gate.Bits, l.GroupSize, l.Hidden, 8)
	if p.gu == "" {
		return p, false
	}
	du := 8
	if v := os.Getenv("FMOE_CUDA_QMXD_U"); v != "" {
		fmt.Sscan(v, &du)
	}
	switch {
	case qmxSplitDown():
		p.dn, p.dtpr, p.dtile = qmxMoEKernel("qmxs", l.Down.Bits, l.GroupSize, l.Intermediate, du)
		p.split = true
	case K <= QMXDownMaxK && c.qmxdSmem(K) <= 48<<10:
		p.dn, p.dtpr, p.dtile = qmxMoEKernel("qmxd", l.Down.Bits, l.GroupSize, l.Intermediate, du)
	}
	return p, true
}

// qmxdSmem is qmxd's shared memory for K experts: their h rows and chunk sums.
func (c *expertCache) qmxdSmem(K int) int {
	l := c.layout
	return K*l.Intermediate*4 + K*(l.Intermediate/(4*32/l.Down.Bits))*4
}

// qmxGateUp (worker only) launches qmxe for experts ids[0:K] of token t0
// (sh: a shared-expert descriptor, merged as expert K; 0 none).
func (b *Backend) qmxGateUp(c *expertCache, p qmxEx, table uintptr, xt *Tensor, ids, hbuf uintptr, t0, K int, sh uintptr) error {
	l := c.layout
	f := b.fn[p.gu]
	kk := K
	if sh != 0 {
		kk++
	}
	tiles := kk * cdiv(l.Intermediate, (128/p.gtpr)*(p.gtile/2))
	occ, err := b.d.occupancy(f, 128, 0)
	if err != nil {
		return err
	}
	return b.d.launch(f, grid1(min(tiles, occ*b.d.sms)), [3]int{128, 1, 1}, 0,
		table, ids, xt.p, hbuf, l.Intermediate, l.Hidden, l.GroupSize, K, t0,
		l.Gate.WOffset, l.Gate.SOffset, l.Gate.BOffset, l.Up.WOffset, l.Up.SOffset, l.Up.BOffset, sh)
}

// qmxDown (worker only) launches qmxd or qmxs for experts ids[0:K] of token
// t0: dst = Σ_k wts·down (accum: dst +=; sh: the shared expert merged, as in
// qmxGateUp).
func (b *Backend) qmxDown(c *expertCache, p qmxEx, table uintptr, d *Tensor, ids, wts, hbuf uintptr, t0, K int, accum bool, sh uintptr) error {
	l := c.layout
	kk := K
	if sh != 0 {
		kk++
	}
	a := 0
	if accum {
		a = 1
	}
	f := b.fn[p.dn]
	tiles := cdiv(l.Hidden, (128/p.dtpr)*p.dtile)
	if p.split {
		// partial rows for up to QMX_MAXK+1 experts and a count per tile
		// (sized once: a larger scratch would mean a sync to reallocate)
		part, err := b.scratchBuf("qmxs_part", l.Hidden*(qmxMaxK+1)*4)
		if err != nil {
			return err
		}
		cnt, err := b.scratchBuf("qmxs_cnt", l.Hidden*4)
		if err != nil {
			return err
		}
		return b.d.launch(f, grid1(tiles*kk), [3]int{128, 1, 1}, 0,
			table, ids, wts, hbuf, d.p, l.Hidden, l.Intermediate, l.GroupSize, K, t0,
			l.Down.WOffset, l.Down.SOffset, l.Down.BOffset, a, sh, part, cnt)
	}
	smem := c.qmxdSmem(kk)
	occ, err := b.d.occupancy(f, 128, smem)
	if err != nil {
		return err
	}
	return b.d.launch(f, grid1(min(tiles, occ*b.d.sms)), [3]int{128, 1, 1}, smem,
		table, ids, wts, hbuf, d.p, l.Hidden, l.Intermediate, l.GroupSize, K, t0,
		l.Down.WOffset, l.Down.SOffset, l.Down.BOffset, a, sh)
}

// qmxRunExperts (worker only) launches qmxe and qmxd for one token; false:
// not applicable (nothing launched).
func (b *Backend) qmxRunExperts(c *expertCache, table uintptr, xt, d *Tensor, ids, wts, hbuf, part uintptr, t0, K int) (bool, error) {
	p, ok := c.qmxPlanExperts(K)
	if !ok {
		return false, nil
	}
	if err := b.qmxGateUp(c, p, table, xt, ids, hbuf, t0, K, 0); err != nil {
		return true, err
	}
	if p.dn == "" {
		// down projections of every pair at once, then the weighted sum
		l := c.layout
		if err := b.d.launch(b.fn[c.dn], [3]int{cdiv(l.Hidden, 16), K, 1}, [3]int{128, 1, 1}, 0,
			table, ids, hbuf, part, l.Hidden, l.Intermediate, l.GroupSize, K, t0,
			l.Down.WOffset, l.Down.SOffset, l.Down.BOffset); err != nil {
			return true, err
		}
		return true, b.d.launch(b.fn["moe_combine"], [3]int{cdiv(l.Hidden, 256), 1, 1}, [3]int{256, 1, 1}, 0,
			part, wts, d.p, l.Hidden, K, t0)
	}
	return true, b.qmxDown(c, p, table, d, ids, wts, hbuf, t0, K, false, 0)
}

func qmxKernelNames() []string {
	var names []string
	for _, s := range qmxMoEShapes {
		for _, pf := range []string{"qmxe", "qmxd", "qmxs"} {
			names = append(names, fmt.Sprintf("%s%d_%d_%d_%d", pf, s[0], s[1], s[2], s[3]))
		}
	}
	for _, s := range qmxiShapes {
		for _, pf := range []string{"p", "n", "cp", "cn"} {
			names = append(names, fmt.Sprintf("qmxi4_%d_%d%s", s[0], s[1], pf))
		}
	}
	for _, s := range qmxShapes {
		for _, u := range qmxTiles(s.bits) {
			for _, pf := range []string{"p", "n"} {
				names = append(names, fmt.Sprintf("qmx%d_%d_%d_%d%s", s.bits, s.tpr, s.cpt, u, pf))
			}
		}
	}
	return names
}

// qmxPlan returns the threads per row and chunks per thread of a row of in
// columns, false when no qmx kernel takes it.
func qmxPlan(bits, group, in int) (tpr, cpt int, ok bool) {
	if !vecOK(bits, group, in) {
		return 0, 0, false
	}
	nchunks := in / (4 * 32 / bits)
	no256 := os.Getenv("FMOE_CUDA_QMX256") == "0" // benchmarks: 128 threads of 2 chunks instead
	for _, s := range qmxShapes {
		if s.bits == bits && s.tpr*s.cpt == nchunks && !(no256 && s.tpr > 128) {
			return s.tpr, s.cpt, true
		}
	}
	return 0, 0, false
}

// QMX selects the persistent fused decode matvec: "" off (qmvb), or the tile
// and prefetch, e.g. "8p" (8 rows per row group, next tile prefetched), "4n".
// Sizes a bit width lacks fall back to 4. FMOE_CUDA_QMX overrides it ("0" off).
// Default "8p": on an H200 it beat qmvb on every large decode shape (1783 vs
// 1527 GB/s on 12288×4096) and whole-model decode went 121 → 129 tok/s (K=4).
var QMX = "8p"

func qmxVariant() (u int, pf bool) {
	v := QMX
	if e, ok := os.LookupEnv("FMOE_CUDA_QMX"); ok {
		v = e
	}
	if v == "" || v == "0" || v == "off" {
		return 0, false
	}
	u = 8
	if strings.HasPrefix(v, "4") {
		u = 4
	}
	return u, !strings.HasSuffix(v, "n")
}

// qmxLaunch (worker only) fills the tile words of D and launches qmx when it
// applies to the batch; false: not applicable (D untouched).
func (b *Backend) qmxLaunch(bt *fBatch, D *[qbWords]uint64, smem int) (bool, error) {
	if ok, err := b.qmxiLaunch(bt, D, smem); ok || err != nil {
		return ok, err
	}
	u, pf := qmxVariant()
	if u == 0 {
		return false, nil
	}
	w0 := bt.items[0].w
	tpr, cpt, ok := qmxPlan(w0.bits, w0.group, w0.in)
	if !ok {
		return false, nil
	}
	if !slices.Contains(qmxTiles(w0.bits), u) || (tpr > 128 && os.Getenv("FMOE_CUDA_QMX256_U") != "8") {
		u = 4 // 256-thread blocks of 8-row tiles: 184 registers, one block per SM
	}
	nt := max(128, tpr)
	tiles := qmxTileWords(bt, D, nt/tpr*u)
	pfs := "n"
	if pf {
		pfs = "p"
	}
	return true, b.qmxPersistent(D, fmt.Sprintf("qmx%d_%d_%d_%d%s", w0.bits, tpr, cpt, u, pfs), nt, smem, tiles)
}

// qmxTileWords fills D's tile words for tiles of rows rows (with swiglu,
// rows/2 rows of gate and the same rows of up) and returns the number of
// tiles.
func qmxTileWords(bt *fBatch, D *[qbWords]uint64, rows int) int {
	tiles := 0
	if bt.swiglu != nil {
		tiles = cdiv(bt.items[0].w.out, rows/2)
		for i := range bt.items {
			D[qbItem+qbStride*i+8] = 1 << 30
		}
	} else {
		for i, it := range bt.items {
			D[qbItem+qbStride*i+8] = uint64(tiles)
			tiles += cdiv(it.w.out, rows)
		}
	}
	D[20] = uint64(tiles)
	return tiles
}

// QMXIDynamic hands qmxi's tiles after each block's first out through an
// atomic counter (the next one to the block that asks first) instead of
// block b taking b, b + grid, …: its persistent blocks stream at unequal
// rates, and a launch lasts as long as its slowest block;
// FMOE_CUDA_QMXI_DYN=0 or 1 overrides it.
var QMXIDynamic = true

func qmxiDynamic() bool { return envChoice("FMOE_CUDA_QMXI_DYN", "1", "0", QMXIDynamic) }

// qmxPersistent (worker only) uploads D and launches kernel name with a
// persistent grid: as many blocks as fit on the GPU at once, at most tiles.
func (b *Backend) qmxPersistent(D *[qbWords]uint64, name string, threads, smem, tiles int) error {
	desc, err := b.descFor(D)
	if err != nil {
		return err
	}
	f := b.fn[name]
	occ, err := b.d.occupancy(f, threads, smem)
	if err != nil {
		return err
	}
	return b.d.launch(f, grid1(min(tiles, occ*b.d.sms)), [3]int{threads, 1, 1}, smem, desc)
}

// occupancy (worker only) returns how many blocks of f fit on one SM
// (at least 1), cached per function and shared-memory size.
func (d *device) occupancy(f uintptr, threads, smem int) (int, error) {
	key := [3]uintptr{f, uintptr(threads), uintptr(smem)}
	if n, ok := d.occ[key]; ok {
		return n, nil
	}
	var n int32
	if err := check(call(d.l.drv.cuOccupancyMaxActiveBlocksPerMultiprocessor, uintptr(unsafe.Pointer(&n)), f, uintptr(threads), uintptr(smem)),
		"cuOccupancyMaxActiveBlocksPerMultiprocessor"); err != nil {
		return 0, err
	}
	if d.occ == nil {
		d.occ = map[[3]uintptr]int{}
	}
	d.occ[key] = max(1, int(n))
	return d.occ[key], nil
}

// QMXI selects qmxi (kernels_mxi.cu), the 4-bit decode matvec on the integer
// tensor cores, for the batches it takes when QMX is on (4-bit, groups of
// 64, a width of 64·warps·groups per warp of qmxiShapes, compute capability
// 8.0 or later): "" off, "p" with the next tile prefetched, "n" without;
// "cp", "cn": the same with 16-byte loads of group pairs.
// FMOE_CUDA_QMXI overrides it ("0" off, "1" = "p"); FMOE_CUDA_QMXI_NW=n
// prefers the shapes of n warps. Default "p": on an H200 (397B shapes, one
// call, docs/benchmarks.md round 10) resident decode went 183 → 205 tok/s
// at K=4 and 149 → 165 at K=10 against qmx; "n" gave 204-205, "cp" 193-200.
var QMXI = "p"

// qmxiShapes are the qmxi kernels built: warps per block, groups per warp
// (the first whose width matches wins).
var qmxiShapes = [][2]int{{8, 8}, {16, 8}, {8, 16}, {4, 4}, {4, 8}, {4, 16}}

func qmxiVariant() string {
	v := QMXI
	if e, ok := os.LookupEnv("FMOE_CUDA_QMXI"); ok {
		v = e
	}
	switch v {
	case "", "0", "off":
		return ""
	case "1":
		return "p"
	case "p", "n", "cp", "cn":
		return v
	}
	return ""
}

// qmxiPlan returns qmxi's warps and groups per warp for rows of in columns.
func (b *Backend) qmxiPlan(bits, group, in int) (nw, gw int, ok bool) {
	if b.d.ccMajor < 8 || bits != 4 || group != 64 {
		return 0, 0, false
	}
	pref := 0
	fmt.Sscan(os.Getenv("FMOE_CUDA_QMXI_NW"), &pref)
	for _, pass := range []bool{true, false} {
		for _, s := range qmxiShapes {
			if 64*s[0]*s[1] == in && (!pass || pref == 0 || s[0] == pref) {
				return s[0], s[1], true
			}
		}
	}
	return 0, 0, false
}

// qmxiLaunch (worker only) launches qmxi for the batch when it is on and
// applies; false: not (D's tile words untouched).
func (b *Backend) qmxiLaunch(bt *fBatch, D *[qbWords]uint64, smem int) (bool, error) {
	v := qmxiVariant()
	if u, _ := qmxVariant(); v == "" || u == 0 {
		return false, nil
	}
	w0 := bt.items[0].w
	nw, gw, ok := b.qmxiPlan(w0.bits, w0.group, w0.in)
	if !ok {
		return false, nil
	}
	tiles := qmxTileWords(bt, D, 16) // the MMA's 16 rows
	smem += 4*w0.in + 4*(w0.in/64)   // x's parts and Σx per group
	if qmxiDynamic() {
		// one counter for every qmxi launch: they run one after another,
		// and each launch's last grab resets it (kernels_mxi.cu)
		ctr, err := b.scratchBuf("qmxi_tiles", 4)
		if err != nil {
			return true, err
		}
		D[22] = uint64(ctr)
	}
	return true, b.qmxPersistent(D, fmt.Sprintf("qmxi4_%d_%d%s", nw, gw, v), 32*nw, smem, tiles)
}
