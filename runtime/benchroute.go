package runtime

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// ExpertCounters are a backend's expert-cache counters (optional capability
// ExpertCounterer). A use is one (token, expert) pair of a MoE call; GPUHits
// are uses whose expert was resident in GPU memory when the call started.
// Missing experts are loaded once per call: from the pinned host tier
// (HostLoads) or read through the ExpertSource (DiskLoads).
type ExpertCounters struct {
	Uses, GPUHits        int64
	HostLoads, DiskLoads int64
	BytesH2D, BytesRead  int64
	Syncs, Evictions     int64 // routing read-backs; GPU cache evictions
	GPUSlots, HostSlots  int   // capacities in experts
	Layers               []LayerCounters
}

// LayerCounters are one layer's share of ExpertCounters.
type LayerCounters struct {
	Uses, GPUHits, HostLoads, DiskLoads int64
}

// ExpertCounterer is an optional Backend capability: counters of its expert cache.
type ExpertCounterer interface {
	ExpertCounters() ExpertCounters
}

// RouteOverrider is an optional Backend capability used only by benchmarks:
// when set, the backend still computes the router and its top-K, then
// replaces the chosen expert ids (len tokens*topK, row-major) by what f
// writes. The model's forward pass never sets it.
type RouteOverrider interface {
	SetRouteOverride(f func(layer, tokens, topK int, ids []int32))
}

// SyntheticRouter makes benchmark routing: per layer a Zipf popularity over a
// random permutation of the experts (exponent S; 0 = uniform), and, with
// probability Reuse, a token keeps the previous token's expert of the same
// rank in that layer (temporal correlation). Choices of one token are distinct.
type SyntheticRouter struct {
	S, Reuse float64
	r        *rand.Rand
	cdf      [][]float64 // per layer, over ranks
	perm     [][]int32
	prev     [][]int32 // per layer, last token's choice
}

// NewSyntheticRouter returns a router for layers × experts.
func NewSyntheticRouter(layers, experts int, s, reuse float64, seed uint64) (*SyntheticRouter, error) {
	if layers <= 0 || experts <= 0 || s < 0 || reuse < 0 || reuse > 1 {
		return nil, fmt.Errorf("runtime: synthetic router: %d layers, %d experts, zipf %g, reuse %g", layers, experts, s, reuse)
	}
	g := &SyntheticRouter{S: s, Reuse: reuse, r: rand.New(rand.NewPCG(seed, 7)),
		cdf: make([][]float64, layers), perm: make([][]int32, layers), prev: make([][]int32, layers)}
	for l := range layers {
		c := make([]float64, experts)
		sum := 0.0
		for i := range c {
			sum += 1 / math.Pow(float64(i+1), s)
			c[i] = sum
		}
		for i := range c {
			c[i] /= sum
		}
		g.cdf[l] = c
		p := make([]int32, experts)
		for i, v := range g.r.Perm(experts) {
			p[i] = int32(v)
		}
		g.perm[l] = p
	}
	return g, nil
}

// Fill writes tokens × topK expert ids of layer into ids.
func (g *SyntheticRouter) Fill(layer, tokens, topK int, ids []int32) {
	c, p := g.cdf[layer], g.perm[layer]
	for t := range tokens {
		row := ids[t*topK : (t+1)*topK]
		prev := g.prev[layer]
		for k := range row {
			var e int32 = -1
			if len(prev) == topK && g.r.Float64() < g.Reuse && !contains(row[:k], prev[k]) {
				e = prev[k]
			}
			for e < 0 || contains(row[:k], e) {
				u := g.r.Float64()
				lo, hi := 0, len(c)-1
				for lo < hi {
					mid := (lo + hi) / 2
					if c[mid] < u {
						lo = mid + 1
					} else {
						hi = mid
					}
				}
				e = p[lo]
			}
			row[k] = e
		}
		g.prev[layer] = append(g.prev[layer][:0], row...)
	}
}

func contains(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
