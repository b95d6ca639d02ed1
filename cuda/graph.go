package cuda

import (
	"fmt"
	"os"
	"sort"
	"unsafe"
)

// CUDA graphs for repeated launch sequences (decode steps).
//
// The runtime's engine drives the backend one operation at a time, so the
// backend cannot see where a decode step starts or ends. Instead the grapher
// watches the stream of launches (kernels and pinned host-to-device copies)
// between two barriers (any other device call: a synchronous copy, a
// download, a sync, a free ...). Such a run of launches is a segment. When a
// segment repeats the previous one exactly (same kernels, grid, arguments:
// every per-step value such as the attention position lives in device
// memory), the sequence is hot: from then on the launches of a segment are
// not issued at once but compared with the recorded ones, and every chunk of
// graphChunk matching launches runs as one CUDA graph (captured on first use,
// then replayed with one cuGraphLaunch). A launch that differs ends the
// replay: the launches held back are issued one by one from the recording
// (they matched it, so they are the same launches), and the rest of the
// segment runs as before. The work a step does is therefore exactly the
// eager work, in the same order on the same stream.
type grapher struct {
	rec      []gop // the last complete segment
	cur      []gop // the current segment so far
	match    bool  // cur is a prefix of rec
	hot      bool  // rec repeated: hold launches back and replay graphs
	issued   int   // launches of cur already issued
	execs    []uintptr
	Replays  int64 // graph launches
	Captures int64
	Eager    int64 // launches issued one by one
}

// graphChunk is the number of launches per graph: small enough that the GPU
// starts on a step while the host still walks through its later layers.
const graphChunk = 128

// graphRamp is the size of a segment's first graphs, before graphChunk: the
// GPU waits for a segment's first graph while the host walks through its
// launches, so the first ones are short (FMOE_CUDA_GRAPH_RAMP=0: every graph
// graphChunk launches).
var graphRamp = []int{8, 16, 32, 64}

// chunkEnds lists where the graphs of a segment end (launch counts), as far
// as segments go in practice; later launches take graphChunk each.
var chunkEnds = func() []int {
	ramp := graphRamp
	if os.Getenv("FMOE_CUDA_GRAPH_RAMP") == "0" {
		ramp = nil
	}
	var ends []int
	for end := 0; end < 1<<16; {
		n := graphChunk
		if len(ends) < len(ramp) {
			n = ramp[len(ends)]
		}
		end += n
		ends = append(ends, end)
	}
	return ends
}()

// chunk returns the launch range [lo, hi) of a segment's graph k.
func chunk(k int) (lo, hi int) {
	if k > 0 {
		lo = chunkEnds[k-1]
	}
	return lo, chunkEnds[k]
}

// chunkAt returns the graph that launch i of a segment belongs to.
func chunkAt(i int) int { return sort.SearchInts(chunkEnds, i+1) }

// gop is one recorded launch: a kernel (f != 0) or a pinned host-to-device
// copy on the compute stream.
type gop struct {
	f           uintptr
	grid, block [3]int
	smem, nargs int
	args        [32]uint64
	dst, src    uintptr // copy
	n           int
}

func (a *gop) same(b *gop) bool {
	if a.f != b.f || a.grid != b.grid || a.block != b.block || a.smem != b.smem || a.nargs != b.nargs ||
		a.dst != b.dst || a.src != b.src || a.n != b.n {
		return false
	}
	return a.args == b.args
}

// launch (worker only) takes a kernel launch whose arguments are in d.slots.
func (g *grapher) launch(d *device, f uintptr, grid, block [3]int, smem, nargs int) error {
	op := gop{f: f, grid: grid, block: block, smem: smem, nargs: nargs}
	copy(op.args[:nargs], d.slots[:nargs])
	return g.add(d, op)
}

// copyAsync (worker only) takes a copy of n bytes from pinned host memory.
func (g *grapher) copyAsync(d *device, dst uintptr, src unsafe.Pointer, n int) error {
	return g.add(d, gop{dst: dst, src: uintptr(src), n: n})
}

func (g *grapher) add(d *device, op gop) error {
	i := len(g.cur)
	g.cur = append(g.cur, op)
	if g.match && (i >= len(g.rec) || !g.rec[i].same(&op)) {
		g.match = false
		if g.hot {
			// Issue what was held back, then go on eagerly.
			if err := g.issue(d, len(g.cur)); err != nil {
				return err
			}
			return nil
		}
	}
	if !g.hot || !g.match {
		return g.issue(d, len(g.cur))
	}
	if k := chunkAt(i); chunkEnds[k] == i+1 {
		return g.replay(d, k)
	}
	return nil
}

// issue (worker only) launches cur[issued:n] one by one.
func (g *grapher) issue(d *device, n int) error {
	for ; g.issued < n; g.issued++ {
		op := &g.cur[g.issued]
		if err := d.issueOp(op); err != nil {
			return err
		}
		g.Eager++
	}
	return nil
}

func (d *device) issueOp(op *gop) error {
	if op.f == 0 {
		return check(call(d.l.drv.cuMemcpyHtoDAsync, op.dst, op.src, uintptr(op.n), d.stream), "cuMemcpyHtoDAsync")
	}
	copy(d.slots[:op.nargs], op.args[:op.nargs])
	for i := range op.nargs {
		d.params[i] = uintptr(unsafe.Pointer(&d.slots[i]))
	}
	return d.rawLaunch(op.f, op.grid, op.block, op.smem)
}

// replay (worker only) runs chunk k of the recording (cur[chunk(k)], all
// matched) as a graph, capturing it first if needed.
func (g *grapher) replay(d *device, k int) error {
	lo, hi := chunk(k)
	hi = min(hi, len(g.rec))
	for len(g.execs) <= k {
		g.execs = append(g.execs, 0)
	}
	if g.execs[k] == 0 {
		const relaxed = 2 // CU_STREAM_CAPTURE_MODE_RELAXED
		if err := check(call(d.l.drv.cuStreamBeginCapture, d.stream, relaxed), "cuStreamBeginCapture"); err != nil {
			return err
		}
		var err error
		d.capturing = true
		for i := lo; i < hi && err == nil; i++ {
			err = d.issueOp(&g.cur[i])
		}
		d.capturing = false
		var graph uintptr
		if e := check(call(d.l.drv.cuStreamEndCapture, d.stream, uintptr(unsafe.Pointer(&graph))), "cuStreamEndCapture"); err == nil {
			err = e
		}
		if err != nil {
			if graph != 0 {
				call(d.l.drv.cuGraphDestroy, graph)
			}
			return fmt.Errorf("cuda: capturing launches %d-%d: %w", lo, hi, err)
		}
		var exec uintptr
		err = check(call(d.l.drv.cuGraphInstantiateWithFlags, uintptr(unsafe.Pointer(&exec)), graph, 0), "cuGraphInstantiateWithFlags")
		call(d.l.drv.cuGraphDestroy, graph)
		if err != nil {
			return err
		}
		g.execs[k] = exec
		g.Captures++
	}
	if err := check(call(d.l.drv.cuGraphLaunch, g.execs[k], d.stream), "cuGraphLaunch"); err != nil {
		return err
	}
	g.Replays++
	g.issued = hi
	return nil
}

// barrier (worker only) ends the current segment before a device call that
// is not a launch: held-back launches are issued (the last chunk as a graph
// when the whole recording matched), and the segment becomes the recording
// the next one is compared with.
func (g *grapher) barrier(d *device) error {
	if len(g.cur) == 0 {
		return nil
	}
	var err error
	full := g.match && len(g.cur) == len(g.rec)
	if g.hot && full && g.issued < len(g.cur) {
		err = g.replay(d, chunkAt(g.issued))
	} else {
		err = g.issue(d, len(g.cur))
	}
	if full {
		g.hot = true
		g.cur = g.cur[:0]
	} else {
		if g.hot || len(g.execs) > 0 {
			if e := g.drop(d); err == nil {
				err = e
			}
		}
		g.rec, g.cur = g.cur, g.rec[:0]
	}
	g.match, g.issued = true, 0
	return err
}

// drop (worker only) destroys the graphs of the recording.
func (g *grapher) drop(d *device) error {
	g.hot = false
	if len(g.execs) == 0 {
		return nil
	}
	// Graph launches may still be queued.
	if err := check(call(d.l.drv.cuStreamSynchronize, d.stream), "cuStreamSynchronize"); err != nil {
		return err
	}
	var err error
	for _, e := range g.execs {
		if e != 0 {
			if e2 := check(call(d.l.drv.cuGraphExecDestroy, e), "cuGraphExecDestroy"); err == nil {
				err = e2
			}
		}
	}
	g.execs = g.execs[:0]
	return err
}

// barrier (worker only) ends the grapher's segment, if graphs are on.
func (d *device) barrier() error {
	if d.trace != nil {
		if n := len(d.trace.names); n > 0 && d.trace.names[n-1] != "" {
			d.trace.names = append(d.trace.names, "")
		}
	}
	if d.graphs == nil {
		return nil
	}
	return d.graphs.barrier(d)
}

// copyAsync (worker only) copies n bytes from pinned host memory on the
// compute stream, as part of the launch sequence (captured into graphs).
func (d *device) copyAsync(dst uintptr, src unsafe.Pointer, n int) error {
	if d.graphs != nil {
		return d.graphs.copyAsync(d, dst, src, n)
	}
	return d.htodAsync(dst, src, n)
}
