package cuda

import (
	"testing"

	"github.com/fmoe/fmoe/runtime"
)

// simulateCache runs decode routing (one token per MoE call) through a GPU
// slot policy the way MoE does and returns the hit rate after a warm-up.
func simulateCache(t *testing.T, p gpuPolicy, layers, experts, k int, s, reuse float64, tokens int) float64 {
	t.Helper()
	steps := make([]int, tokens)
	for i := range steps {
		steps[i] = 1
	}
	st := simulateSteps(t, p, layers, experts, k, s, reuse, steps, false)
	var hits, uses int
	for _, x := range st[tokens/4:] {
		hits += x.hits
		uses += x.uses
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

// stepStats is one simulated forward step: expert uses (token × K), hits
// among them, and experts loaded.
type stepStats struct{ uses, hits, loads int }

// simulateSteps runs forward steps of steps[i] tokens through a GPU slot
// policy the way MoE does (misses placed with putLast in multi-token steps
// when scan is set) and returns each step's counts.
func simulateSteps(t *testing.T, p gpuPolicy, layers, experts, k int, s, reuse float64, steps []int, scan bool) []stepStats {
	t.Helper()
	r, err := runtime.NewSyntheticRouter(layers, experts, s, reuse, 1)
	if err != nil {
		t.Fatal(err)
	}
	st := make([]stepStats, len(steps))
	for i, T := range steps {
		ids := make([]int32, T*k)
		for l := range layers {
			p.advance(float64(T) / float64(layers))
			r.Fill(l, T, k, ids)
			keep := map[int]bool{}
			var miss []int
			for _, e := range ids {
				key := expertKey{l, int(e)}
				slot, ok := p.lookup(key)
				p.use(key)
				st[i].uses++
				if ok {
					p.touch(slot)
					st[i].hits++
				} else if !keep[int(e)] {
					miss = append(miss, int(e))
				}
				keep[int(e)] = true
			}
			for _, e := range miss {
				slot, _, _, ok := p.take(func(q expertKey) bool { return q.layer == l && keep[q.expert] })
				if !ok {
					t.Fatalf("no slot for expert %d of layer %d", e, l)
				}
				if scan && T > 1 {
					p.putLast(slot, expertKey{l, e})
				} else {
					p.put(slot, expertKey{l, e})
				}
				st[i].loads++
			}
		}
	}
	return st
}

// TestPrefillScanLoads: after 64 decode tokens, a 128-token prefill step
// touches all 32 experts of every layer; a 25% cache holds 8 per layer, so
// 24 per layer are missing. Placed like decode's loads, the step's own
// loads evict the layers ahead of it (31 loads per layer, the H200 counted
// 1876 for 60 layers); placed to be evicted first (ScanLoads) they do not,
// and the decode tokens after the step lose nothing. Both policies.
func TestPrefillScanLoads(t *testing.T) {
	const layers, experts = 60, 32
	steps := make([]int, 64, 64+1+16)
	for i := range steps {
		steps[i] = 1
	}
	steps = append(steps, 128)
	for range 16 {
		steps = append(steps, 1)
	}
	for _, pol := range []struct {
		name string
		mk   func() gpuPolicy
	}{{"lru", func() gpuPolicy { return newSlotLRU(layers * experts / 4) }}, {"frequency", func() gpuPolicy { return newFreqSlots(layers * experts / 4) }}} {
		for _, c := range []struct {
			k int
			s float64
		}{{4, 0}, {4, 1}, {10, 0}, {10, 1}} {
			k, s := c.k, c.s
			plain := simulateSteps(t, pol.mk(), layers, experts, k, s, 0.5, steps, false)
			scan := simulateSteps(t, pol.mk(), layers, experts, k, s, 0.5, steps, true)
			sum := func(v []stepStats) (n int) {
				for _, x := range v {
					n += x.loads
				}
				return n
			}
			pre, after := 64, steps[65:]
			t.Logf("%s K=%d zipf %g: prefill loads per layer %.1f -> %.1f; decode loads in the %d tokens after %d -> %d", pol.name, k, s,
				float64(plain[pre].loads)/layers, float64(scan[pre].loads)/layers, len(after), sum(plain[65:]), sum(scan[65:]))
			if float64(scan[pre].loads)/layers > 24.5+1 {
				t.Errorf("%s K=%d zipf %g: %.1f loads per layer in the prefill step, want about 24 (the experts not cached)", pol.name, k, s, float64(scan[pre].loads)/layers)
			}
			if scan[pre].loads >= plain[pre].loads {
				t.Errorf("%s K=%d zipf %g: scan placement loaded %d, plain %d", pol.name, k, s, scan[pre].loads, plain[pre].loads)
			}
			if sum(scan[65:]) > sum(plain[65:])*11/10 {
				t.Errorf("%s K=%d zipf %g: decode after the step loaded %d with scan placement, %d without", pol.name, k, s, sum(scan[65:]), sum(plain[65:]))
			}
		}
	}
}
