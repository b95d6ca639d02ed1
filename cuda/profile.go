package cuda

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// profiler times every kernel launch with a pair of GPU events (enabled by
// Options.Profile or FMOE_CUDA_PROFILE=1): per kernel name, the launch count,
// the GPU time between the events and the host time spent in cuLaunchKernel.
// The events themselves cost host time, so a profiled run is slower; the
// per-kernel GPU times are what it is for. With byGrid (FMOE_CUDA_PROFILE=grid)
// launches of one kernel with different grids count apart (name/gN: the
// call sites of the decode matvec differ in grid, e.g. a layer's input
// projection, its router, the lm_head).
type profiler struct {
	byGrid  bool
	names   map[uintptr]string
	pending []profRec
	pool    []uintptr
	stats   map[string]*ProfileStat
}

type profRec struct {
	name   string
	e0, e1 uintptr
	host   time.Duration
}

// ProfileStat is one kernel's share of a profile.
type ProfileStat struct {
	Name     string
	Launches int64
	GPU      time.Duration // sum of event-measured kernel times
	Host     time.Duration // sum of host time inside cuLaunchKernel
}

func newProfiler(names map[uintptr]string) *profiler {
	return &profiler{names: names, stats: map[string]*ProfileStat{}}
}

// event (worker only) returns an event from the pool or a new one.
func (p *profiler) event(d *device) (uintptr, error) {
	if n := len(p.pool); n > 0 {
		e := p.pool[n-1]
		p.pool = p.pool[:n-1]
		return e, nil
	}
	return d.eventCreate()
}

// harvest (worker only) waits for the recorded events and adds them up.
func (p *profiler) harvest(d *device) error {
	if len(p.pending) == 0 {
		return nil
	}
	if err := d.eventSync(p.pending[len(p.pending)-1].e1); err != nil {
		return err
	}
	for _, r := range p.pending {
		ms, err := d.eventElapsed(r.e0, r.e1)
		if err != nil {
			return err
		}
		s := p.stats[r.name]
		if s == nil {
			s = &ProfileStat{Name: r.name}
			p.stats[r.name] = s
		}
		s.Launches++
		s.GPU += time.Duration(float64(ms) * 1e6)
		s.Host += r.host
		p.pool = append(p.pool, r.e0, r.e1)
	}
	p.pending = p.pending[:0]
	return nil
}

// launchProfiled (worker only) is launch with events around the kernel.
func (d *device) launchProfiled(f uintptr, grid [3]int, launch func() uintptr) error {
	p := d.prof
	e0, err := p.event(d)
	if err != nil {
		return err
	}
	e1, err := p.event(d)
	if err != nil {
		return err
	}
	if err := d.eventRecordOn(e0, d.stream); err != nil {
		return err
	}
	t0 := time.Now()
	r := launch()
	host := time.Since(t0)
	if err := check(r, "cuLaunchKernel"); err != nil {
		return err
	}
	if err := d.eventRecordOn(e1, d.stream); err != nil {
		return err
	}
	name := p.names[f]
	if name == "" {
		name = fmt.Sprintf("fn%x", f)
	}
	if p.byGrid {
		name = fmt.Sprintf("%s/g%d", name, grid[0]*grid[1]*grid[2])
	}
	p.pending = append(p.pending, profRec{name: name, e0: e0, e1: e1, host: host})
	if len(p.pending) >= 4096 {
		return p.harvest(d)
	}
	return nil
}

// Profile returns the kernel profile so far, largest GPU time first (nil
// when profiling is off).
func (b *Backend) Profile() ([]ProfileStat, error) {
	p := b.d.prof
	if p == nil {
		return nil, nil
	}
	if err := b.run(func() error { return p.harvest(b.d) }); err != nil {
		return nil, err
	}
	out := make([]ProfileStat, 0, len(p.stats))
	for _, s := range p.stats {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GPU > out[j].GPU })
	return out, nil
}

// WriteProfile prints the kernel profile as a table.
func WriteProfile(w io.Writer, stats []ProfileStat) {
	var n int64
	var gpu, host time.Duration
	for _, s := range stats {
		n += s.Launches
		gpu += s.GPU
		host += s.Host
	}
	fmt.Fprintf(w, "cuda profile: %d launches, GPU %.3f ms, host in cuLaunchKernel %.3f ms\n", n, ms(gpu), ms(host))
	fmt.Fprintf(w, "%-22s %9s %11s %9s %9s %6s\n", "kernel", "launches", "GPU ms", "GPU µs/l", "host µs/l", "GPU %")
	for _, s := range stats {
		fmt.Fprintf(w, "%-22s %9d %11.3f %9.2f %9.2f %6.1f\n", s.Name, s.Launches, ms(s.GPU),
			1e3*ms(s.GPU)/float64(s.Launches), 1e3*ms(s.Host)/float64(s.Launches), 100*float64(s.GPU)/float64(max(gpu, 1)))
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
