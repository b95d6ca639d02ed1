package cuda

import (
	"container/list"
	"context"
	"fmt"
	"time"
	"unsafe"

	"github.com/fmoe/fmoe/runtime"
)

// ExpertStats counts where routed experts came from. A "use" is one
// (token, expert) pair of a MoE call; hits were resident in the GPU cache when
// the call started, misses were read from the ExpertSource (each missing
// expert is read once per call: Loads).
type ExpertStats struct {
	Hits, Misses int64 // uses served from the GPU cache / needing a read
	Loads        int64 // experts read through the ExpertSource
	BytesRead    int64
	Syncs        int64 // routing read-backs (host round-trips)
	Evictions    int64
	Slots        int // GPU cache capacity in experts
	Resident     int // experts resident now
	SlotBytes    int64
	Layers       map[int]LayerStats
}

// LayerStats are one layer's hit and miss counts.
type LayerStats struct{ Hits, Misses int64 }

// Stats returns a snapshot of the expert cache counters.
func (b *Backend) Stats() ExpertStats {
	c := b.moe
	if c == nil {
		return ExpertStats{}
	}
	s := c.stats
	s.Layers = make(map[int]LayerStats, len(c.stats.Layers))
	for k, v := range c.stats.Layers {
		s.Layers[k] = v
	}
	s.Slots, s.Resident, s.SlotBytes = c.slots, len(c.where), c.stride
	return s
}

// Sync waits for all queued GPU work (runtime.Syncer).
func (b *Backend) Sync() error { return b.run(b.d.sync) }

type expertKey struct{ layer, expert int }

type expertCache struct {
	src        runtime.ExpertSource
	layout     runtime.ExpertLayout
	numExperts int
	stride     int64
	slots      int
	base       uintptr
	free       []int // never-used slots
	owner      []expertKey
	where      map[expertKey]int
	lru        *list.List // front = most recent; values are slot numbers
	elems      []*list.Element
	tables     map[int]uintptr // layer -> device table [E]u64
	host       map[int][]uint64
	count      map[int]int      // resident experts per layer
	stage      []unsafe.Pointer // pinned host buffers, one expert each
	stats      ExpertStats
	gu, dn     string // kernel names
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
	c := &expertCache{src: src, layout: l, numExperts: p.NumExperts, where: map[expertKey]int{}, lru: list.New(),
		tables: map[int]uintptr{}, host: map[int][]uint64{}, count: map[int]int{},
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
	c.slots = int(budget / c.stride)
	if b.opts.CacheExperts > 0 {
		c.slots = min(c.slots, b.opts.CacheExperts)
	}
	if c.slots < p.TopK {
		return nil, fmt.Errorf("cuda: expert cache of %d bytes holds %d experts of %d bytes, fewer than top-k %d", budget, c.slots, l.Size, p.TopK)
	}
	var err error
	if c.base, err = b.alloc(int(int64(c.slots) * c.stride)); err != nil {
		return nil, fmt.Errorf("cuda: expert cache of %d slots: %w", c.slots, err)
	}
	c.owner = make([]expertKey, c.slots)
	c.elems = make([]*list.Element, c.slots)
	for i := c.slots - 1; i >= 0; i-- {
		c.free = append(c.free, i)
	}
	vg := vecOK(l.Gate.Bits, l.GroupSize, l.Hidden, l.Gate.WOffset, l.Up.WOffset)
	vd := vecOK(l.Down.Bits, l.GroupSize, l.Intermediate, l.Down.WOffset)
	c.gu = fmt.Sprintf("moe_gu%d%s", l.Gate.Bits, map[bool]string{true: "v", false: "s"}[vg])
	c.dn = fmt.Sprintf("moe_dn%d%s", l.Down.Bits, map[bool]string{true: "v", false: "s"}[vd])
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
	for _, h := range c.stage {
		if err := b.d.hostFree(h); err != nil {
			return err
		}
		for i, p := range b.hosts {
			if p == h {
				b.hosts = append(b.hosts[:i], b.hosts[i+1:]...)
				break
			}
		}
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
	c.host[layer] = make([]uint64, c.numExperts)
	return t, nil
}

// staging (worker only) returns n pinned buffers of one expert each.
func (c *expertCache) staging(b *Backend, n int) ([]unsafe.Pointer, error) {
	for len(c.stage) < n {
		h, err := b.d.hostAlloc(int(c.layout.Size))
		if err != nil {
			return nil, err
		}
		b.hosts = append(b.hosts, h)
		c.stage = append(c.stage, h)
	}
	return c.stage[:n], nil
}

// load (worker only) reads experts ids of layer (none resident) into cache
// slots, evicting least recently used experts outside keep. It updates the
// host mirror of the table; the caller uploads it.
func (c *expertCache) load(ctx context.Context, b *Backend, layer int, ids []int, keep map[int]bool, rt *runtime.Routing) error {
	const batch = 16
	for len(ids) > 0 {
		n := min(len(ids), batch)
		part := ids[:n]
		ids = ids[n:]
		bufs, err := c.staging(b, n)
		if err != nil {
			return err
		}
		// The previous batch's async copies read the staging buffers.
		if err := b.d.sync(); err != nil {
			return err
		}
		dst := make([][]byte, n)
		for i, h := range bufs {
			dst[i] = unsafe.Slice((*byte)(h), c.layout.Size)
		}
		t0 := time.Now()
		if err := c.src.ReadExperts(ctx, layer, part, dst); err != nil {
			return fmt.Errorf("cuda: read experts %v of layer %d: %w", part, layer, err)
		}
		if rt != nil {
			rt.Read += time.Since(t0)
			rt.BytesRead += int64(n) * c.layout.Size
		}
		c.stats.Loads += int64(n)
		c.stats.BytesRead += int64(n) * c.layout.Size
		for i, e := range part {
			slot, err := c.takeSlot(keep, layer)
			if err != nil {
				return err
			}
			p := c.base + uintptr(int64(slot)*c.stride)
			if err := b.d.htodAsync(p, bufs[i], int(c.layout.Size)); err != nil {
				return err
			}
			k := expertKey{layer, e}
			c.owner[slot] = k
			c.where[k] = slot
			c.elems[slot] = c.lru.PushFront(slot)
			c.host[layer][e] = uint64(p)
			c.count[layer]++
		}
	}
	return nil
}

// takeSlot returns a free slot or evicts the least recently used expert
// whose layer/expert is not in keep (keep holds experts of layer).
func (c *expertCache) takeSlot(keep map[int]bool, layer int) (int, error) {
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s, nil
	}
	for e := c.lru.Back(); e != nil; e = e.Prev() {
		s := e.Value.(int)
		k := c.owner[s]
		if k.layer == layer && keep[k.expert] {
			continue
		}
		c.lru.Remove(e)
		delete(c.where, k)
		c.host[k.layer][k.expert] = 0
		c.count[k.layer]--
		c.stats.Evictions++
		return s, nil
	}
	return 0, fmt.Errorf("cuda: expert cache of %d slots cannot hold the experts of one batch", c.slots)
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
	return b.run(func() error { return b.moe1(ctx, d, xt, rw, src, p, routing) })
}

func (b *Backend) moe1(ctx context.Context, d, xt *Tensor, rw *Weight, src runtime.ExpertSource, p runtime.MoEParams, routing *runtime.Routing) error {
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
	ids, err := b.scratchBuf("moe_ids", T*K*4)
	if err != nil {
		return err
	}
	wts, err := b.scratchBuf("moe_wts", T*K*4)
	if err != nil {
		return err
	}
	hbuf, err := b.scratchBuf("moe_h", T*K*l.Intermediate*4)
	if err != nil {
		return err
	}
	if err := b.matmul(logits, rw, xt.p, T); err != nil {
		return err
	}
	if err := b.d.launch(b.fn["router_topk"], grid1(T), [3]int{32, 1, 1}, E*4, logits, E, K, ids, wts); err != nil {
		return err
	}
	table, err := c.table(b, p.Layer)
	if err != nil {
		return err
	}
	// Fill a new layer completely while never-used slots remain.
	if c.count[p.Layer] == 0 && !b.opts.NoLayerFill && len(c.free) >= E {
		all := make([]int, E)
		for e := range all {
			all[e] = e
		}
		if err := c.load(ctx, b, p.Layer, all, nil, routing); err != nil {
			return err
		}
		if err := b.d.htod(table, unsafe.Pointer(&c.host[p.Layer][0]), E*8); err != nil {
			return err
		}
	}
	ls := c.stats.Layers[p.Layer]
	defer func() { c.stats.Layers[p.Layer] = ls }()
	if c.count[p.Layer] == E && routing == nil {
		c.stats.Hits += int64(T * K)
		ls.Hits += int64(T * K)
		return b.runExperts(c, table, xt, d, ids, wts, hbuf, 0, T, K)
	}
	// Read the routing back (one host round-trip for the layer).
	hid := make([]int32, T*K)
	hw := make([]float32, T*K)
	if err := b.d.dtoh(unsafe.Pointer(&hid[0]), ids, T*K*4); err != nil {
		return err
	}
	if err := b.d.dtoh(unsafe.Pointer(&hw[0]), wts, T*K*4); err != nil {
		return err
	}
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
			if len(keep)+add > c.slots {
				break
			}
			for _, e := range hid[t1*K : (t1+1)*K] {
				k := expertKey{p.Layer, int(e)}
				slot, resident := c.where[k]
				if resident {
					c.stats.Hits++
					ls.Hits++
				} else {
					c.stats.Misses++
					ls.Misses++
				}
				if !keep[int(e)] {
					keep[int(e)] = true
					if resident {
						c.lru.MoveToFront(c.elems[slot])
					} else {
						miss = append(miss, int(e))
					}
				}
			}
		}
		if len(miss) > 0 {
			if err := c.load(ctx, b, p.Layer, miss, keep, routing); err != nil {
				return err
			}
			if err := b.d.htod(table, unsafe.Pointer(&c.host[p.Layer][0]), E*8); err != nil {
				return err
			}
		}
		if err := b.runExperts(c, table, xt, d, ids, wts, hbuf, t0, t1-t0, K); err != nil {
			return err
		}
		t0 = t1
	}
	return nil
}

// runExperts (worker only) launches the expert kernels for tokens t0..t0+n-1.
func (b *Backend) runExperts(c *expertCache, table uintptr, xt, d *Tensor, ids, wts, hbuf uintptr, t0, n, K int) error {
	l := c.layout
	if err := b.d.launch(b.fn[c.gu], [3]int{cdiv(l.Intermediate, 8), n * K, 1}, [3]int{128, 1, 1}, 0,
		table, ids, xt.p, hbuf, l.Intermediate, l.Hidden, l.GroupSize, K, t0,
		l.Gate.WOffset, l.Gate.SOffset, l.Gate.BOffset, l.Up.WOffset, l.Up.SOffset, l.Up.BOffset); err != nil {
		return err
	}
	return b.d.launch(b.fn[c.dn], [3]int{cdiv(l.Hidden, 16), n, 1}, [3]int{128, 1, 1}, 0,
		table, ids, wts, hbuf, d.p, l.Hidden, l.Intermediate, l.GroupSize, K, t0,
		l.Down.WOffset, l.Down.SOffset, l.Down.BOffset)
}
