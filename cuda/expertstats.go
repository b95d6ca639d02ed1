package cuda

import (
	"github.com/fmoe/fmoe/runtime"
)

// ExpertStats counts where routed experts came from. A "use" is one
// (token, expert) pair of a MoE call; hits were resident in the GPU cache when
// the call started, misses were not. Each missing expert is loaded once per
// call: from the pinned host tier (HostLoads) or read through the
// ExpertSource (Loads).
type ExpertStats struct {
	Hits, Misses int64 // uses served from the GPU cache / needing a load
	Loads        int64 // experts read through the ExpertSource
	HostLoads    int64 // experts copied from the pinned host tier
	BytesRead    int64
	BytesH2D     int64
	Syncs        int64 // routing read-backs (host round-trips)
	Split        int64 // one-token MoE calls whose resident experts ran while the missing ones were copied
	Evictions    int64
	Slots        int // GPU cache capacity in experts
	HostSlots    int // pinned host tier capacity in experts
	Resident     int // experts resident now
	SlotBytes    int64
	Layers       map[int]LayerStats
}

// LayerStats are one layer's counts.
type LayerStats struct{ Hits, Misses, HostLoads, Loads int64 }

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
	s.Slots, s.Resident, s.SlotBytes = c.gpu.size(), c.gpu.resident(), c.stride
	if c.host != nil {
		s.HostSlots = c.host.n
	}
	return s
}

// ExpertCounters implements runtime.ExpertCounterer.
func (b *Backend) ExpertCounters() runtime.ExpertCounters {
	s := b.Stats()
	out := runtime.ExpertCounters{Uses: s.Hits + s.Misses, GPUHits: s.Hits, HostLoads: s.HostLoads, DiskLoads: s.Loads,
		BytesH2D: s.BytesH2D, BytesRead: s.BytesRead, Syncs: s.Syncs, Evictions: s.Evictions, GPUSlots: s.Slots, HostSlots: s.HostSlots}
	n := 0
	for l := range s.Layers {
		n = max(n, l+1)
	}
	out.Layers = make([]runtime.LayerCounters, n)
	for l, v := range s.Layers {
		out.Layers[l] = runtime.LayerCounters{Uses: v.Hits + v.Misses, GPUHits: v.Hits, HostLoads: v.HostLoads, DiskLoads: v.Loads}
	}
	return out
}

// SetRouteOverride implements runtime.RouteOverrider (benchmarks only).
func (b *Backend) SetRouteOverride(f func(layer, tokens, topK int, ids []int32)) { b.override = f }

// Sync waits for all queued GPU work (runtime.Syncer).
func (b *Backend) Sync() error { return b.run(b.d.sync) }
