package cuda

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"
	"unsafe"

	"github.com/fmoe/fmoe/runtime"
)

type expertCache struct {
	src        runtime.ExpertSource
	layout     runtime.ExpertLayout
	numExperts int
	stride     int64
	base       uintptr
	gpu        gpuPolicy
	host       *slotLRU         // pinned host tier (nil: none)
	hostBuf    []unsafe.Pointer // per host slot, allocated on first use
	tables     map[int]uintptr  // layer -> device table [E]u64
	mirror     map[int][]uint64
	count      map[int]int         // resident experts per layer
	stage      [2][]unsafe.Pointer // pinned staging (no host tier), double-buffered
	stageEv    [2]uintptr          // copies out of each staging set done
	stageIdx   int
	copyS      uintptr // copy stream
	copyEv     uintptr // copies of a load done (the compute stream waits)
	computeEv  uintptr // compute queued before a load done (the copy stream waits)
	tev        [4]uintptr
	ovBuf      map[int]pinnedBuf      // per layer: routing override ids
	spBuf      map[int]pinnedBuf      // per layer: a split MoE's reordered ids and weights
	rb         pinnedBuf              // routing read-back (ids, then weights)
	tabBuf     map[int]unsafe.Pointer // per layer: pinned copy of the table, uploaded on the compute stream
	tabEv      uintptr                // the last table upload done
	tabPending bool
	stats      ExpertStats
	gu, dn     string // kernel names
	fast       bool   // batched kernels (moe_gu?f, moe_dn?f + moe_combine)
}

func sameSource(a, b runtime.ExpertSource) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

// cacheFor (worker only) returns the expert cache for src, building it on
// first use or when the source or its layout changed.
func (b *Backend) cacheFor(src runtime.ExpertSource, p runtime.MoEParams) (*expertCache, error) {
	l := src.Layout()
	if c := b.moe; c != nil && sameSource(c.src, src) && c.layout == l && c.numExperts == p.NumExperts {
		return c, nil
	}
	if b.moe != nil {
		if err := b.dropCache(); err != nil {
			return nil, err
		}
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("cuda: expert layout: %w", err)
	}
	if l.Gate.Bits != l.Up.Bits {
		return nil, fmt.Errorf("%w: gate %d-bit and up %d-bit experts", ErrShape, l.Gate.Bits, l.Up.Bits)
	}
	c := &expertCache{src: src, layout: l, numExperts: p.NumExperts,
		tables: map[int]uintptr{}, mirror: map[int][]uint64{}, count: map[int]int{},
		stats: ExpertStats{Layers: map[int]LayerStats{}}}
	c.stride = (l.Size + 255) &^ 255
	budget := b.opts.CacheBytes
	if budget <= 0 {
		free, total, err := b.d.memInfo()
		if err != nil {
			return nil, err
		}
		reserve := max(int64(2)<<30, int64(total)/20)
		budget = int64(free) - reserve
	}
	slots := int(budget / c.stride)
	if b.opts.CacheExperts > 0 {
		slots = min(slots, b.opts.CacheExperts)
	}
	if slots < p.TopK {
		return nil, fmt.Errorf("cuda: expert cache of %d bytes holds %d experts of %d bytes, fewer than top-k %d", budget, slots, l.Size, p.TopK)
	}
	var err error
	if c.base, err = b.alloc(int(int64(slots) * c.stride)); err != nil {
		return nil, fmt.Errorf("cuda: expert cache of %d slots: %w", slots, err)
	}
	if b.opts.LRUCache || os.Getenv("FMOE_CUDA_CACHE") == "lru" {
		c.gpu = newSlotLRU(slots)
	} else {
		c.gpu = newFreqSlots(slots)
	}
	if hs := int(b.opts.HostCacheBytes / l.Size); hs > 0 {
		c.host = newSlotLRU(hs)
		c.hostBuf = make([]unsafe.Pointer, hs)
	}
	if c.copyS, err = b.d.streamCreate(); err != nil {
		return nil, err
	}
	for _, e := range append([]*uintptr{&c.copyEv, &c.computeEv, &c.stageEv[0], &c.stageEv[1], &c.tabEv}, &c.tev[0], &c.tev[1], &c.tev[2], &c.tev[3]) {
		if *e, err = b.d.eventCreate(); err != nil {
			return nil, err
		}
	}
	vg := vecOK(l.Gate.Bits, l.GroupSize, l.Hidden, l.Gate.WOffset, l.Up.WOffset)
	vd := vecOK(l.Down.Bits, l.GroupSize, l.Intermediate, l.Down.WOffset)
	c.gu = fmt.Sprintf("moe_gu%d%s", l.Gate.Bits, map[bool]string{true: "v", false: "s"}[vg])
	c.dn = fmt.Sprintf("moe_dn%d%s", l.Down.Bits, map[bool]string{true: "v", false: "s"}[vd])
	if vg && vd && !b.opts.NoBatchedMoE {
		c.fast = true
		c.gu, c.dn = fmt.Sprintf("moe_gu%df", l.Gate.Bits), fmt.Sprintf("moe_dn%df", l.Down.Bits)
	}
	b.moe = c
	return c, nil
}

func (b *Backend) dropCache() error {
	c := b.moe
	b.moe = nil
	if err := b.d.sync(); err != nil {
		return err
	}
	if err := b.release(c.base); err != nil {
		return err
	}
	for _, t := range c.tables {
		if err := b.release(t); err != nil {
			return err
		}
	}
	var pinned []unsafe.Pointer
	pinned = append(pinned, c.stage[0]...)
	pinned = append(pinned, c.stage[1]...)
	for _, h := range c.hostBuf {
		if h != nil {
			pinned = append(pinned, h)
		}
	}
	for _, m := range []map[int]pinnedBuf{c.ovBuf, c.spBuf} {
		for _, o := range m {
			pinned = append(pinned, o.p)
		}
	}
	if c.rb.p != nil {
		pinned = append(pinned, c.rb.p)
	}
	for _, h := range c.tabBuf {
		pinned = append(pinned, h)
	}
	for _, h := range pinned {
		if err := b.d.hostFree(h); err != nil {
			return err
		}
		b.forgetHost(h)
	}
	for _, e := range append([]uintptr{c.copyEv, c.computeEv, c.stageEv[0], c.stageEv[1], c.tabEv}, c.tev[:]...) {
		if e != 0 {
			b.d.eventDestroy(e)
		}
	}
	if c.copyS != 0 {
		return b.d.streamDestroy(c.copyS)
	}
	return nil
}

// table (worker only) returns the device pointer table of a layer.
func (c *expertCache) table(b *Backend, layer int) (uintptr, error) {
	if t, ok := c.tables[layer]; ok {
		return t, nil
	}
	t, err := b.alloc(c.numExperts * 8)
	if err != nil {
		return 0, err
	}
	c.tables[layer] = t
	c.mirror[layer] = make([]uint64, c.numExperts)
	return t, nil
}

// uploadTable (worker only) queues the upload of layer's table (its host
// mirror) on the compute stream, from a pinned per-layer copy: no host wait
// for the expert copies the compute stream already waits for (a synchronous
// upload would block until they are done, then the GPU would idle until the
// next launches arrive). The pinned copy is rewritten only after the last
// upload ran (tabEv; in decode it has, since the layer's routing readback).
func (c *expertCache) uploadTable(b *Backend, layer int, table uintptr) error {
	if c.tabPending {
		if err := b.d.eventSync(c.tabEv); err != nil {
			return err
		}
		c.tabPending = false
	}
	if c.tabBuf == nil {
		c.tabBuf = map[int]unsafe.Pointer{}
	}
	h, ok := c.tabBuf[layer]
	if !ok {
		var err error
		if h, err = b.d.hostAlloc(c.numExperts * 8); err != nil {
			return err
		}
		b.hosts = append(b.hosts, h)
		c.tabBuf[layer] = h
	}
	copy(unsafe.Slice((*uint64)(h), c.numExperts), c.mirror[layer])
	if err := b.d.copyAsync(table, h, c.numExperts*8); err != nil {
		return err
	}
	if err := b.d.eventRecordOn(c.tabEv, b.d.stream); err != nil {
		return err
	}
	c.tabPending = true
	return nil
}

// pinned (worker only) allocates one expert's worth of pinned host memory.
func (c *expertCache) pinned(b *Backend) (unsafe.Pointer, error) {
	h, err := b.d.hostAlloc(int(c.layout.Size))
	if err != nil {
		return nil, err
	}
	b.hosts = append(b.hosts, h)
	return h, nil
}

const loadBatch = 16

type pinnedBuf struct {
	p unsafe.Pointer
	n int
}

// layerBuf (worker only) returns layer's pinned buffer of m for n 32-bit
// words (routing override ids, reordered ids and weights), growing it (after
// a sync: a queued copy may still read the old one).
func (c *expertCache) layerBuf(b *Backend, m *map[int]pinnedBuf, layer, n int) (unsafe.Pointer, error) {
	if *m == nil {
		*m = map[int]pinnedBuf{}
	}
	o := (*m)[layer]
	if o.n >= n {
		return o.p, nil
	}
	if o.p != nil {
		if err := b.d.sync(); err != nil {
			return nil, err
		}
		if err := b.d.hostFree(o.p); err != nil {
			return nil, err
		}
		b.forgetHost(o.p)
	}
	size := max(n, 64)
	h, err := b.d.hostAlloc(size * 4)
	if err != nil {
		return nil, err
	}
	b.hosts = append(b.hosts, h)
	(*m)[layer] = pinnedBuf{h, size}
	return h, nil
}

// ScanLoads places the experts a multi-token (prefill) MoE call loads at the
// eviction end of the GPU cache, so that a prefill step, which sweeps every
// layer's experts once, does not evict the experts decoding keeps (with a
// 25% cache and uniform routing a 128-token step loaded 31.2 experts per
// layer of 32 where 24 are missing: simulated in TestPrefillScanLoads, 1876
// loads on the H200 in round 9's call 14). FMOE_CUDA_SCAN=0 or 1 overrides it.
var ScanLoads = true

func scanLoads() bool { return envChoice("FMOE_CUDA_SCAN", "1", "0", ScanLoads) }

// gpuSlot (worker only) takes a GPU slot for an expert of layer, evicting a
// least recently used expert not in keep (keep holds experts of layer).
func (c *expertCache) gpuSlot(layer int, keep map[int]bool) (int, error) {
	slot, k, evicted, ok := c.gpu.take(func(k expertKey) bool { return k.layer == layer && keep[k.expert] })
	if !ok {
		return 0, fmt.Errorf("cuda: expert cache of %d slots cannot hold the experts of one batch", c.gpu.size())
	}
	if evicted {
		c.mirror[k.layer][k.expert] = 0
		c.count[k.layer]--
		c.stats.Evictions++
	}
	return slot, nil
}

// place (worker only) queues the copy of one expert from pinned src into a
// GPU slot on the copy stream and records it resident (last: as the next to
// be evicted, gpuPolicy.putLast, with ScanLoads).
func (c *expertCache) place(b *Backend, layer, e int, src unsafe.Pointer, keep map[int]bool, last bool) error {
	slot, err := c.gpuSlot(layer, keep)
	if err != nil {
		return err
	}
	p := c.base + uintptr(int64(slot)*c.stride)
	if err := b.d.htodOn(p, src, int(c.layout.Size), c.copyS); err != nil {
		return err
	}
	if last && scanLoads() {
		c.gpu.putLast(slot, expertKey{layer, e})
	} else {
		c.gpu.put(slot, expertKey{layer, e})
	}
	c.mirror[layer][e] = uint64(p)
	c.count[layer]++
	c.stats.BytesH2D += c.layout.Size
	return nil
}

// load (worker only) makes experts ids of layer (none resident) resident:
// from the pinned host tier when it holds them, else read through the
// ExpertSource (parallel pread) into pinned memory (a host-tier slot, or
// double-buffered staging), copied on the copy stream while the next batch
// is read. The compute stream waits for the copies. It updates the host
// mirror of the table; the caller uploads it. last: the experts are placed
// to be evicted first (a prefill step's loads; place).
func (c *expertCache) load(ctx context.Context, b *Backend, layer int, ids []int, keep map[int]bool, rt *runtime.Routing, last bool) error {
	if err := c.queueLoad(ctx, b, layer, ids, keep, rt, last); err != nil {
		return err
	}
	return b.d.streamWaitEvent(b.d.stream, c.copyEv)
}

// queueLoad (worker only) is load without the compute stream's wait: the
// copies are queued on the copy stream and c.copyEv marks their end.
func (c *expertCache) queueLoad(ctx context.Context, b *Backend, layer int, ids []int, keep map[int]bool, rt *runtime.Routing, last bool) error {
	// Copies overwrite slots that kernels queued earlier may still read.
	if err := b.d.eventRecordOn(c.computeEv, b.d.stream); err != nil {
		return err
	}
	if err := b.d.streamWaitEvent(c.copyS, c.computeEv); err != nil {
		return err
	}
	ls := c.stats.Layers[layer]
	defer func() { c.stats.Layers[layer] = ls }()
	var read []int
	for _, e := range ids {
		if c.host != nil {
			if hs, ok := c.host.where[expertKey{layer, e}]; ok {
				c.host.touch(hs)
				if err := c.place(b, layer, e, c.hostBuf[hs], keep, last); err != nil {
					return err
				}
				c.stats.HostLoads++
				ls.HostLoads++
				continue
			}
		}
		read = append(read, e)
	}
	hostSynced := false
	for len(read) > 0 {
		n := min(len(read), loadBatch)
		part := read[:n]
		read = read[n:]
		bufs := make([]unsafe.Pointer, n)
		hslots := make([]int, n)
		if c.host != nil {
			for i := range part {
				hs, _, evicted, ok := c.host.take(func(k expertKey) bool { return k.layer == layer && keep[k.expert] })
				if !ok {
					return fmt.Errorf("cuda: host expert tier of %d slots cannot hold the experts of one batch", c.host.n)
				}
				if evicted && !hostSynced {
					// A queued copy may still read the evicted slot.
					if err := b.d.streamSync(c.copyS); err != nil {
						return err
					}
					hostSynced = true
				}
				if c.hostBuf[hs] == nil {
					h, err := c.pinned(b)
					if err != nil {
						return err
					}
					c.hostBuf[hs] = h
				}
				bufs[i], hslots[i] = c.hostBuf[hs], hs
			}
		} else {
			c.stageIdx ^= 1
			set := c.stageIdx
			// The copies that last read this staging set must be done.
			if err := b.d.eventSync(c.stageEv[set]); err != nil {
				return err
			}
			for len(c.stage[set]) < n {
				h, err := c.pinned(b)
				if err != nil {
					return err
				}
				c.stage[set] = append(c.stage[set], h)
			}
			copy(bufs, c.stage[set][:n])
		}
		dst := make([][]byte, n)
		for i, h := range bufs {
			dst[i] = unsafe.Slice((*byte)(h), c.layout.Size)
		}
		t0 := time.Now()
		if err := c.src.ReadExperts(ctx, layer, part, dst); err != nil {
			if c.host != nil { // the slots hold nothing valid
				for _, hs := range hslots {
					c.host.free = append(c.host.free, hs)
				}
			}
			return fmt.Errorf("cuda: read experts %v of layer %d: %w", part, layer, err)
		}
		if rt != nil {
			rt.Read += time.Since(t0)
			rt.BytesRead += int64(n) * c.layout.Size
		}
		c.stats.Loads += int64(n)
		ls.Loads += int64(n)
		c.stats.BytesRead += int64(n) * c.layout.Size
		for i, e := range part {
			if c.host != nil {
				c.host.put(hslots[i], expertKey{layer, e})
			}
			if err := c.place(b, layer, e, bufs[i], keep, last); err != nil {
				return err
			}
		}
		if c.host == nil {
			if err := b.d.eventRecordOn(c.stageEv[c.stageIdx], c.copyS); err != nil {
				return err
			}
		}
	}
	return b.d.eventRecordOn(c.copyEv, c.copyS)
}

// MoE implements runtime.Backend: router matvec, softmax/top-K and
// renormalisation on the GPU, then the experts through the layer's device
// pointer table. A layer whose experts are all resident runs without a host
// round-trip (unless routing is requested); otherwise the chosen ids are read
// back once, misses are read into pinned buffers and copied into the cache.
func (b *Backend) MoE(ctx context.Context, dst, x runtime.Tensor, router runtime.Weight, src runtime.ExpertSource, p runtime.MoEParams, routing *runtime.Routing) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ts, err := tensors(dst, x)
	if err != nil {
		return err
	}
	ws, err := weights(router)
	if err != nil {
		return err
	}
	d, xt, rw := ts[0], ts[1], ws[0]
	T, E, K := xt.rows, p.NumExperts, p.TopK
	if d.rows != T || d.cols != xt.cols || rw.out != E || rw.in != xt.cols || K <= 0 || K > E || K > 32 {
		return fmt.Errorf("%w: moe x [%d,%d] dst [%d,%d] router [%d,%d] top-%d of %d", ErrShape, T, xt.cols, d.rows, d.cols, rw.out, rw.in, K, E)
	}
	if l := src.Layout(); l.Hidden != xt.cols {
		return fmt.Errorf("%w: experts of hidden size %d for x of width %d", ErrShape, l.Hidden, xt.cols)
	}
	return b.runRaw(func() error {
		if err := b.flushMoE(); err != nil { // first: its replay may leave a batch pending
			return err
		}
		if err := b.flushBatch(); err != nil {
			return err
		}
		if err := b.flushTail(); err != nil {
			return err
		}
		nrm, err := b.takeNorm(xt)
		if err != nil {
			return err
		}
		if nrm != nil && !(xt.rows == 1 && fusableMV(rw, xt)) {
			if err := b.rmsnormLaunch(nrm.dst, nrm.x, nrm.w, nrm.x.cols, nrm.eps); err != nil {
				return err
			}
			nrm = nil
		}
		return b.moe1(ctx, d, xt, rw, src, p, routing, nrm)
	})
}

// moe1 (worker only): nrm, when set, is the pending RMSNorm producing xt
// (fused into the router launch).
func (b *Backend) moe1(ctx context.Context, d, xt *Tensor, rw *Weight, src runtime.ExpertSource, p runtime.MoEParams, routing *runtime.Routing, nrm *pendNorm) error {
	T, E, K := xt.rows, p.NumExperts, p.TopK
	c, err := b.cacheFor(src, p)
	if err != nil {
		return err
	}
	l := c.layout
	logits, err := b.scratchBuf("moe_logits", T*E*4)
	if err != nil {
		return err
	}
	// ids, then weights: one read-back
	ids, err := b.scratchBuf("moe_route", T*K*8)
	if err != nil {
		return err
	}
	wts := ids + uintptr(T*K*4)
	hbuf, err := b.scratchBuf("moe_h", (T*K+1)*l.Intermediate*4) // one more: a merged shared expert (fuse.go)
	if err != nil {
		return err
	}
	var part uintptr
	if c.fast {
		if part, err = b.scratchBuf("moe_part", T*K*l.Hidden*4); err != nil {
			return err
		}
	}
	// With routing requested (--timing), GPU events time the router and the
	// expert kernels.
	timed := routing != nil
	if timed {
		if err := b.d.eventRecord(c.tev[0]); err != nil {
			return err
		}
	}
	// The benchmarks' routing override: its ids go through a pinned buffer
	// per layer, read by the router launch itself (a fused one-token router)
	// or copied on the compute stream after it; no host sync either way.
	var ovp unsafe.Pointer
	if b.override != nil {
		if ovp, err = c.layerBuf(b, &c.ovBuf, p.Layer, T*K); err != nil {
			return err
		}
		b.override(p.Layer, T, K, unsafe.Slice((*int32)(ovp), T*K))
	}
	if nrm != nil || (T == 1 && !b.fuseOff() && fusableMV(rw, xt) && E <= 12*1024) {
		// router matvec (after the fused norm) and top-K in one launch; an
		// override's ids replace its picks in the same launch (a copy node
		// would break the decode graph's programmatic-launch chain: resident
		// K=4 decode 148-149 tok/s with it, 155-158 with the model's routing)
		bt := &fBatch{x: xt, norm: nrm, items: []fItem{{w: rw, x: xt, y: &Tensor{p: logits, rows: 1, cols: E}}}}
		if err := b.launchBatch(bt, &topk{E: E, K: K, ids: ids, wts: wts, ov: uintptr(ovp)}); err != nil {
			return err
		}
		ovp = nil
	} else {
		if err := b.matmul(logits, rw, xt.p, T); err != nil {
			return err
		}
		if err := b.d.launch(b.fn["router_topk"], grid1(T), [3]int{32, 1, 1}, E*4, logits, E, K, ids, wts); err != nil {
			return err
		}
	}
	if ovp != nil {
		if err := b.d.copyAsync(ids, ovp, T*K*4); err != nil {
			return err
		}
	}
	if timed {
		if err := b.d.eventRecord(c.tev[1]); err != nil {
			return err
		}
	}
	table, err := c.table(b, p.Layer)
	if err != nil {
		return err
	}
	ls := c.stats.Layers[p.Layer]
	// Fill a new layer completely while never-used slots remain.
	c.gpu.advance(float64(T) / float64(len(c.tables)))
	if c.count[p.Layer] == 0 && !b.opts.NoLayerFill && c.gpu.freeSlots() >= E {
		all := make([]int, E)
		for e := range all {
			all[e] = e
		}
		if err := c.load(ctx, b, p.Layer, all, nil, routing, false); err != nil {
			return err
		}
		if err := c.uploadTable(b, p.Layer, table); err != nil {
			return err
		}
		ls = c.stats.Layers[p.Layer]
	}
	defer func() { c.stats.Layers[p.Layer] = ls }()
	if c.count[p.Layer] == E && routing == nil {
		c.stats.Hits += int64(T * K)
		ls.Hits += int64(T * K)
		if b.holdMoE(c, table, xt, d, ids, wts, hbuf, part, K) {
			return nil // launched with the shared expert (fuse_moe.go)
		}
		return b.runExperts(c, table, xt, d, ids, wts, hbuf, part, 0, T, K)
	}
	// Read the routing back (one host round-trip for the layer) into pinned
	// memory (no copy in a staging buffer), then out of it: later layers
	// reuse it.
	if c.rb.n < 2*T*K {
		if c.rb.p != nil {
			if err := b.d.hostFree(c.rb.p); err != nil {
				return err
			}
			b.forgetHost(c.rb.p)
			c.rb = pinnedBuf{}
		}
		n := max(2*T*K, 256)
		h, err := b.d.hostAlloc(n * 4)
		if err != nil {
			return err
		}
		b.hosts = append(b.hosts, h)
		c.rb = pinnedBuf{h, n}
	}
	if err := b.d.dtoh(c.rb.p, ids, T*K*8); err != nil {
		return err
	}
	hid := slices.Clone(unsafe.Slice((*int32)(c.rb.p), T*K))
	hw := slices.Clone(unsafe.Slice((*float32)(unsafe.Add(c.rb.p, T*K*4)), T*K))
	c.stats.Syncs++
	if routing != nil {
		routing.Experts = make([][]int, T)
		routing.Weights = make([][]float32, T)
		for t := 0; t < T; t++ {
			routing.Experts[t] = make([]int, K)
			for k := 0; k < K; k++ {
				routing.Experts[t][k] = int(hid[t*K+k])
			}
			routing.Weights[t] = append([]float32(nil), hw[t*K:(t+1)*K]...)
		}
	}
	for _, e := range hid {
		if e < 0 || int(e) >= E {
			return fmt.Errorf("cuda: router chose expert %d of %d (non-finite logits?)", e, E)
		}
	}
	first := true
	// Tokens in chunks whose distinct experts fit in the cache.
	for t0 := 0; t0 < T; {
		keep := map[int]bool{}
		var miss []int
		t1 := t0
		for ; t1 < T; t1++ {
			add := 0
			for _, e := range hid[t1*K : (t1+1)*K] {
				if !keep[int(e)] {
					add++
				}
			}
			if len(keep)+add > c.gpu.size() {
				break
			}
			for _, e := range hid[t1*K : (t1+1)*K] {
				k := expertKey{p.Layer, int(e)}
				slot, resident := c.gpu.lookup(k)
				c.gpu.use(k)
				if resident {
					c.stats.Hits++
					ls.Hits++
					c.gpu.touch(slot)
				} else {
					c.stats.Misses++
					ls.Misses++
				}
				if !keep[int(e)] {
					keep[int(e)] = true
					if !resident {
						miss = append(miss, int(e))
					}
				}
			}
		}
		if len(miss) > 0 && T == 1 && routing == nil {
			if ok, err := b.moeSplit(ctx, c, p.Layer, table, xt, d, hid, hw, keep, miss, hbuf, &ls); ok || err != nil {
				return err
			}
		}
		if len(miss) > 0 {
			lsSave := ls
			c.stats.Layers[p.Layer] = ls
			if err := c.load(ctx, b, p.Layer, miss, keep, routing, T > 1); err != nil {
				return err
			}
			ls = c.stats.Layers[p.Layer]
			ls.Hits, ls.Misses = lsSave.Hits, lsSave.Misses
			if err := c.uploadTable(b, p.Layer, table); err != nil {
				return err
			}
		}
		if timed && first {
			if err := b.d.eventRecord(c.tev[2]); err != nil {
				return err
			}
			first = false
		}
		if err := b.runExperts(c, table, xt, d, ids, wts, hbuf, part, t0, t1-t0, K); err != nil {
			return err
		}
		t0 = t1
	}
	if timed {
		if err := b.d.eventRecord(c.tev[3]); err != nil {
			return err
		}
		route, err := b.d.eventElapsed(c.tev[0], c.tev[1])
		if err != nil {
			return err
		}
		comp, err := b.d.eventElapsed(c.tev[2], c.tev[3])
		if err != nil {
			return err
		}
		routing.Route += time.Duration(float64(route) * 1e6)
		routing.Compute += time.Duration(float64(comp) * 1e6)
	}
	return nil
}

// MoEGateSplit selects the gate/up expert kernel whose 4 warps split the
// columns of 2 rows (moe_gu?k) over one warp per 2 rows (moe_gu?f), for
// hidden sizes of at least 128 chunks (benchmarks compare the two).
var MoEGateSplit = true

// runExperts (worker only) launches the expert kernels for tokens t0..t0+n-1.
func (b *Backend) runExperts(c *expertCache, table uintptr, xt, d *Tensor, ids, wts, hbuf, part uintptr, t0, n, K int) error {
	l := c.layout
	if n == 1 {
		if ok, err := b.qmxRunExperts(c, table, xt, d, ids, wts, hbuf, part, t0, K); ok || err != nil {
			return err
		}
	}
	if n > 1 && n*K >= GemmMinTokens {
		if ok, err := b.qmmaExperts(c, table, xt, d, ids, wts, hbuf, part, t0, n, K); ok || err != nil {
			return err
		}
	}
	if c.fast {
		gu, gx := c.gu, cdiv(l.Intermediate, 8)
		if MoEGateSplit && l.Hidden/(4*32/l.Gate.Bits) >= 128 {
			gu, gx = gu[:len(gu)-1]+"k", cdiv(l.Intermediate, 2)
		}
		if err := b.d.launch(b.fn[gu], [3]int{gx, n * K, 1}, [3]int{128, 1, 1}, 0,
			table, ids, xt.p, hbuf, l.Intermediate, l.Hidden, l.GroupSize, K, t0,
			l.Gate.WOffset, l.Gate.SOffset, l.Gate.BOffset, l.Up.WOffset, l.Up.SOffset, l.Up.BOffset); err != nil {
			return err
		}
		if !b.fuseOff() && K <= 4 {
			// down projections with the routing weights applied (no combine;
			// a warp walks K/4 experts, so only for small K)
			return b.d.launch(b.fn[fmt.Sprintf("moe_dnc%d", l.Down.Bits)], [3]int{cdiv(l.Hidden, 4), n, 1}, [3]int{128, 1, 1}, 0,
				table, ids, wts, hbuf, d.p, l.Hidden, l.Intermediate, l.GroupSize, K, t0,
				l.Down.WOffset, l.Down.SOffset, l.Down.BOffset)
		}
		if err := b.d.launch(b.fn[c.dn], [3]int{cdiv(l.Hidden, 16), n * K, 1}, [3]int{128, 1, 1}, 0,
			table, ids, hbuf, part, l.Hidden, l.Intermediate, l.GroupSize, K, t0,
			l.Down.WOffset, l.Down.SOffset, l.Down.BOffset); err != nil {
			return err
		}
		return b.d.launch(b.fn["moe_combine"], [3]int{cdiv(l.Hidden, 256), n, 1}, [3]int{256, 1, 1}, 0,
			part, wts, d.p, l.Hidden, K, t0)
	}
	if err := b.d.launch(b.fn[c.gu], [3]int{cdiv(l.Intermediate, 8), n * K, 1}, [3]int{128, 1, 1}, 0,
		table, ids, xt.p, hbuf, l.Intermediate, l.Hidden, l.GroupSize, K, t0,
		l.Gate.WOffset, l.Gate.SOffset, l.Gate.BOffset, l.Up.WOffset, l.Up.SOffset, l.Up.BOffset); err != nil {
		return err
	}
	return b.d.launch(b.fn[c.dn], [3]int{cdiv(l.Hidden, 16), n, 1}, [3]int{128, 1, 1}, 0,
		table, ids, wts, hbuf, d.p, l.Hidden, l.Intermediate, l.GroupSize, K, t0,
		l.Down.WOffset, l.Down.SOffset, l.Down.BOffset)
}

// forgetHost drops h from the pinned allocations freed at Close.
func (b *Backend) forgetHost(h unsafe.Pointer) {
	for i, p := range b.hosts {
		if p == h {
			b.hosts = append(b.hosts[:i], b.hosts[i+1:]...)
			return
		}
	}
}
