package cuda

import (
	"fmt"
	"io"
	"os"
	"sort"
	"unsafe"
)

// tracer (FMOE_CUDA_TRACE=1) times every kernel as it runs, graphs and
// programmatic dependent launch included, unlike the profiler's events
// around eager launches: each kernel appends the GPU's global timer when
// its pdl_wait returns (kernels.cu, fmoe_trace), which is when the kernel
// before it on the stream finished. The host records the launch order (the
// order the GPU runs them: graph replays keep it) with a mark at every
// barrier; the difference between a kernel's time and the next one's, both
// inside one segment between barriers, is the kernel's share of the
// critical path; for the last kernel of a segment ("|name") it also holds
// the barrier: the host's sync, its work and its next launches. Printed by
// Close (Backend.WriteTrace).
type tracer struct {
	buf   uintptr  // device: count, then one timestamp per kernel
	names []string // per launch: kernel/grid; "" marks a barrier
}

const traceCap = 1 << 20 // FMOE_TRACE_CAP in kernels.cu

// startTrace (worker only) allocates the buffer and points fmoe_trace at it.
func (b *Backend) startTrace() error {
	p, err := b.globalBuffer("fmoe_trace", traceCap*8, 8)
	if err != nil {
		return err
	}
	b.d.trace = &tracer{buf: p}
	return nil
}

// globalBuffer (worker only) allocates bytes of device memory, zeroes the
// first zero of them, and points the kernels' __device__ pointer name at it.
func (b *Backend) globalBuffer(name string, bytes, zero int) (uintptr, error) {
	p, err := b.alloc(bytes)
	if err != nil {
		return 0, err
	}
	if err := b.d.memset(p, zero); err != nil {
		return 0, err
	}
	var g, n uintptr
	cn := cstring(name)
	if err := check(call(b.d.l.drv.cuModuleGetGlobal, uintptr(unsafe.Pointer(&g)), uintptr(unsafe.Pointer(&n)), b.mod, uintptr(unsafe.Pointer(&cn[0]))),
		"cuModuleGetGlobal "+name); err != nil {
		return 0, err
	}
	return p, b.d.htod(g, unsafe.Pointer(&p), 8)
}

// traceLaunch (worker only) records a launch of f.
func (d *device) traceLaunch(f uintptr, grid [3]int, names map[uintptr]string) {
	n := names[f]
	if n == "" {
		n = fmt.Sprintf("fn%x", f)
	}
	d.trace.names = append(d.trace.names, fmt.Sprintf("%s/g%d", n, grid[0]*grid[1]*grid[2]))
}

// TraceStat is one kernel's share of a trace.
type TraceStat struct {
	Name     string
	Launches int
	Nanos    int64 // sum of the kernel's critical-path time
}

// Trace returns the per-kernel sums so far, largest first, and the number
// of kernels timed (nil, 0 when tracing is off).
func (b *Backend) Trace() ([]TraceStat, int, error) {
	t := b.d.trace
	if t == nil {
		return nil, 0, nil
	}
	var ts []int64
	if err := b.run(func() error {
		if err := b.d.sync(); err != nil {
			return err
		}
		var cnt uint64
		if err := b.d.dtoh(unsafe.Pointer(&cnt), t.buf, 8); err != nil {
			return err
		}
		if cnt > traceCap-1 { // the buffer is full: the first kernels only
			cnt = traceCap - 1
			t.names = firstKernels(t.names, int(cnt))
		}
		ts = make([]int64, cnt)
		if cnt == 0 {
			return nil
		}
		return b.d.dtoh(unsafe.Pointer(&ts[0]), t.buf+8, int(cnt)*8)
	}); err != nil {
		return nil, 0, err
	}
	out, err := traceStats(t.names, ts)
	return out, len(ts), err
}

// traceStats adds up a trace: names are the launches in order with "" at
// each barrier, ts one GPU time per kernel. A kernel's time runs to the next
// kernel's; the last kernel before a barrier counts apart as "|" + its name
// (its time holds the barrier), and the very last one has no end.
func traceStats(names []string, ts []int64) ([]TraceStat, error) {
	nk := 0
	for _, n := range names {
		if n != "" {
			nk++
		}
	}
	if nk != len(ts) {
		return nil, fmt.Errorf("cuda trace: %d kernels launched, %d timestamps (a kernel without exactly one pdl_wait?)", nk, len(ts))
	}
	by := map[string]*TraceStat{}
	k := 0
	for i, n := range names {
		if n == "" {
			continue
		}
		key := n
		if i+1 < len(names) && names[i+1] == "" {
			key = "|" + n
		}
		if k+1 < len(ts) {
			s := by[key]
			if s == nil {
				s = &TraceStat{Name: key}
				by[key] = s
			}
			s.Launches++
			s.Nanos += ts[k+1] - ts[k]
		}
		k++
	}
	out := make([]TraceStat, 0, len(by))
	for _, s := range by {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Nanos > out[j].Nanos || out[i].Nanos == out[j].Nanos && out[i].Name < out[j].Name
	})
	return out, nil
}

// WriteTrace prints the trace as a table.
func WriteTrace(w io.Writer, stats []TraceStat, kernels int) {
	var tot int64
	var n int
	for _, s := range stats {
		tot += s.Nanos
		n += s.Launches
	}
	fmt.Fprintf(w, "cuda trace: %d kernels, %d timed, %.3f ms (|name: the last kernel before a barrier, with the barrier)\n", kernels, n, float64(tot)/1e6)
	fmt.Fprintf(w, "%-26s %9s %11s %9s %6s\n", "kernel/grid", "launches", "ms", "µs/l", "%")
	for _, s := range stats {
		fmt.Fprintf(w, "%-26s %9d %11.3f %9.2f %6.1f\n", s.Name, s.Launches, float64(s.Nanos)/1e6,
			float64(s.Nanos)/1e3/float64(s.Launches), 100*float64(s.Nanos)/float64(max(tot, 1)))
	}
}

func traceOn() bool { return os.Getenv("FMOE_CUDA_TRACE") == "1" }

// firstKernels cuts names after its n-th kernel.
func firstKernels(names []string, n int) []string {
	for i, name := range names {
		if name != "" {
			if n == 0 {
				return names[:i]
			}
			n--
		}
	}
	return names
}

// The stage probe (FMOE_CUDA_PROBE=1, a diagnostic): the decode kernels add
// the SM cycles from their entry to each stage in block 0 (kernels.cu,
// fmoe_probe). Classes: 1-4 qmxi router, gate/up, normed, plain; 5 qmxe; 6
// qmxs; 9-12 qmx as 1-4. Stages: 0 the wait returned, 1 x prepared, 2 the
// shared expert's gate, 3 the first tile stored, 4 the tiles done, 5 top-K;
// word 11: ns from block 0's wait to the last block's exit (probe_exit).
const probeWords = 16 * 16

func probeOn() bool { return os.Getenv("FMOE_CUDA_PROBE") == "1" }

// startProbe (worker only) allocates the probe's sums and points fmoe_probe at them.
func (b *Backend) startProbe() error {
	p, err := b.globalBuffer("fmoe_probe", probeWords*8, probeWords*8)
	b.d.probe = p
	return err
}

// writeProbe prints the probe's mean cycles per class and stage.
func (b *Backend) writeProbe(w io.Writer) error {
	var v [probeWords]uint64
	if err := b.run(func() error {
		if err := b.d.sync(); err != nil {
			return err
		}
		return b.d.dtoh(unsafe.Pointer(&v[0]), b.d.probe, probeWords*8)
	}); err != nil {
		return err
	}
	fmt.Fprintln(w, "cuda probe: mean SM cycles from entry, block 0 (class: launches: stage=cycles)")
	for c := 0; c < 16; c++ {
		n := v[c*16+15]
		if n == 0 {
			continue
		}
		fmt.Fprintf(w, "class %2d: %6d:", c, n)
		for st := 0; st < 11; st++ {
			if v[c*16+st] != 0 {
				fmt.Fprintf(w, " %d=%d", st, v[c*16+st]/n)
			}
		}
		if t := v[c*16+11]; t != 0 {
			fmt.Fprintf(w, " tail=%dns", t/n) // block 0's wait to the last block's exit
		}
		fmt.Fprintln(w)
	}
	return nil
}
