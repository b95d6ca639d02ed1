package cuda

import (
	"testing"

	"github.com/fmoe/fmoe/runtime"
)

// simulateCache runs decode routing (one token per MoE call) through a GPU
// slot policy the way MoE does and returns the hit rate after a warm-up.
func simulateCache(t *testing.T, p gpuPolicy, layers, experts, k int, s, reuse float64, tokens int) float64 {
	t.Helper()
	r, err := runtime.NewSyntheticRouter(layers, experts, s, reuse, 1)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int32, k)
	var hits, uses int
	for tok := range tokens {
		for l := range layers {
			p.advance(1 / float64(layers))
			r.Fill(l, 1, k, ids)
			keep := map[int]bool{}
			var miss []int
			for _, e := range ids {
				key := expertKey{l, int(e)}
				slot, ok := p.lookup(key)
				p.use(key)
				if ok {
					p.touch(slot)
					if tok >= tokens/4 {
						hits++
					}
				} else {
					miss = append(miss, int(e))
				}
				keep[int(e)] = true
				if tok >= tokens/4 {
					uses++
				}
			}
			for _, e := range miss {
				slot, _, _, ok := p.take(func(q expertKey) bool { return q.layer == l && keep[q.expert] })
				if !ok {
					t.Fatalf("no slot for expert %d of layer %d", e, l)
				}
				p.put(slot, expertKey{l, e})
			}
		}
	}
	return float64(hits) / float64(uses)
}

// TestCachePolicyNoThrash: with K=10 and a 25% cache, LRU gets no hits
// (every expert is evicted before the next token needs it); the segmented
// frequency policy keeps about its protected share. With skewed routing it
// must not lose against LRU where LRU works (K=4).
func TestCachePolicyNoThrash(t *testing.T) {
	const layers, experts = 60, 32
	slots := layers * experts / 4
	for _, c := range []struct {
		k        int
		s, reuse float64
	}{{10, 0, 0}, {10, 1, 0.5}, {4, 0, 0}, {4, 1, 0.5}} {
		lru := simulateCache(t, newSlotLRU(slots), layers, experts, c.k, c.s, c.reuse, 400)
		fq := simulateCache(t, newFreqSlots(slots), layers, experts, c.k, c.s, c.reuse, 400)
		t.Logf("K=%d zipf %g reuse %g: hit rate LRU %.3f, frequency %.3f", c.k, c.s, c.reuse, lru, fq)
		if c.k == 10 && c.s == 0 && fq < 0.15 {
			t.Errorf("K=10 uniform: frequency policy hit rate %.3f, want ≥ 0.15 (25%% cache)", fq)
		}
		if fq < lru-0.03 {
			t.Errorf("K=%d zipf %g: frequency policy %.3f below LRU %.3f", c.k, c.s, fq, lru)
		}
	}
}
