package cuda

import (
	"context"
	"os"
	"slices"
	"unsafe"
)

// A one-token MoE whose experts are partly resident in the GPU cache: the
// resident ones run while the missing ones are copied.

// SplitMoE lets one-token MoE calls with resident and missing experts run
// the resident ones during the copies (moeSplit); FMOE_CUDA_SPLIT=0 or 1
// overrides it.
var SplitMoE = true

func splitMoE() bool {
	if v, ok := os.LookupEnv("FMOE_CUDA_SPLIT"); ok {
		return v != "0"
	}
	return SplitMoE
}

// moeTail is the deferred rest of a split one-token MoE (moeSplit): the
// missing experts, once their copies are done.
type moeTail struct {
	c           *expertCache
	p           qmxEx
	layer       int
	table       uintptr
	x, d        *Tensor
	ids, wts, h uintptr // the missing experts' ids, weights and h rows
	n           int     // missing routing entries
}

// moeSplit (worker only) runs a one-token MoE whose experts are partly
// resident without waiting for the copies first: the missing experts'
// copies are queued on the copy stream, the routing is reordered (resident
// experts first; one pinned copy on the compute stream), the resident
// experts' qmxe and qmxd (which writes dst) are launched at once, and the
// rest (the compute stream's wait for the copies, the table upload, the
// missing experts' qmxe and qmxd adding into dst) is deferred in b.tail
// until an operation touches dst or x (flushTail), so the work queued in
// between (the shared expert's gate and up projections) runs during the
// copies too. false: not applicable (nothing done).
func (b *Backend) moeSplit(ctx context.Context, c *expertCache, layer int, table uintptr, xt, d *Tensor, hid []int32, hw []float32,
	keep map[int]bool, miss []int, hbuf uintptr, ls *LayerStats) (bool, error) {
	K := len(hid)
	nh := 0 // routing entries whose expert is resident
	for _, e := range hid {
		if !slices.Contains(miss, int(e)) {
			nh++
		}
	}
	if nh == 0 || nh == K || !splitMoE() {
		return false, nil
	}
	p, ok := c.qmxPlanExperts(K)
	if !ok || p.dn == "" {
		return false, nil
	}
	sp, err := b.scratchBuf("moe_split", K*8)
	if err != nil {
		return true, err
	}
	lsSave := *ls
	c.stats.Layers[layer] = *ls
	if err := c.queueLoad(ctx, b, layer, miss, keep, nil, false); err != nil {
		return true, err
	}
	*ls = c.stats.Layers[layer]
	ls.Hits, ls.Misses = lsSave.Hits, lsSave.Misses
	// resident experts first, then the missing ones, each in routing order
	hp, err := c.layerBuf(b, &c.spBuf, layer, 2*K)
	if err != nil {
		return true, err
	}
	ro := unsafe.Slice((*int32)(hp), 2*K)
	rw := unsafe.Slice((*float32)(hp), 2*K)
	j := 0
	for _, resident := range []bool{true, false} {
		for k, e := range hid {
			if slices.Contains(miss, int(e)) != resident {
				ro[j], rw[K+j] = e, hw[k]
				j++
			}
		}
	}
	if err := b.d.copyAsync(sp, hp, K*8); err != nil {
		return true, err
	}
	ids, wts := sp, sp+uintptr(K*4)
	if err := b.qmxGateUp(c, p, table, xt, ids, hbuf, 0, nh, 0); err != nil {
		return true, err
	}
	if err := b.qmxDown(c, p, table, d, ids, wts, hbuf, 0, nh, false, 0); err != nil {
		return true, err
	}
	off := uintptr(nh * 4)
	b.tail = &moeTail{c: c, p: p, layer: layer, table: table, x: xt, d: d, ids: ids + off, wts: wts + off,
		h: hbuf + uintptr(nh*c.layout.Intermediate*4), n: K - nh}
	c.stats.Split++
	return true, nil
}

// flushTail (worker only) queues a split MoE's deferred rest.
func (b *Backend) flushTail() error {
	t := b.tail
	if t == nil {
		return nil
	}
	b.tail = nil
	if err := b.d.streamWaitEvent(b.d.stream, t.c.copyEv); err != nil {
		return err
	}
	if err := t.c.uploadTable(b, t.layer, t.table); err != nil {
		return err
	}
	if err := b.qmxGateUp(t.c, t.p, t.table, t.x, t.ids, t.h, 0, t.n, 0); err != nil {
		return err
	}
	return b.qmxDown(t.c, t.p, t.table, t.d, t.ids, t.wts, t.h, 0, t.n, true, 0)
}
