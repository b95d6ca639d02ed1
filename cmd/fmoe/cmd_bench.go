package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/runtime"
	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure expert-only or whole-model throughput (experts/s, tok/s)",
		ArgsUsage: " ",
		Description: `--mode experts (default) runs only the routed-expert part of every layer (routing with
the layer's router on random hidden states, expert reads, expert compute) for --tokens
tokens, like flash-moe's main.m, and prints experts/s, tok/s and the expert read rate.

--mode full runs the whole model: a prompt of --prefill random token ids (in batches of
--batch), then --tokens greedy decode steps, after --warmup decode steps that are not
timed (they fill the expert caches). It prints prefill and decode tok/s, the expert cache
counters per tier (backends that keep them), and, given bandwidths (--hbm-gbs,
--h2d-gbs, --disk-gbs, GB/s), the floor per token from the bytes it must move and
E = floor / measured.

--routing model|uniform|skewed: model uses the routers; uniform and skewed replace
the chosen experts (after the router ran) by synthetic ones, a benchmark-only override
the backend must support (cuda): uniform draws experts uniformly (hit rate = cache
fraction), skewed draws from a Zipf popularity per layer (--zipf exponent, over a random
permutation of the experts) and with probability --reuse keeps the previous token's
expert (temporal correlation).

   fmoe bench --model out/demo/model --tokens 32
   fmoe bench --model ~/models/q35 -k 4 --direct-io      # cold reads from disk
   fmoe bench --model m --backend cuda --mode full --prefill 256 --tokens 64 -k 4 \
       --gpu-cache-gb 4 --host-cache-gb 64 --routing skewed --hbm-gbs 4200 --h2d-gbs 55

` + exitCodesHelp,
		Flags: append(modelFlags(),
			&cli.IntFlag{Name: "tokens", Aliases: []string{"n"}, Value: 16, Usage: "tokens to run (decode steps with --mode full)"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the random hidden states, prompt and synthetic routing"},
			&cli.StringFlag{Name: "mode", Value: "experts", Usage: "experts (routed experts only) or full (whole model: prefill + decode)"},
			&cli.IntFlag{Name: "prefill", Value: 128, Usage: "prompt tokens (--mode full; 0 = one token)"},
			&cli.IntFlag{Name: "warmup", Value: 8, Usage: "untimed decode steps before the timed run (--mode full)"},
			&cli.StringFlag{Name: "routing", Value: "model", Usage: "model, uniform or skewed (synthetic, benchmark-only override)"},
			&cli.Float64Flag{Name: "zipf", Value: 1.0, Usage: "Zipf exponent of the skewed routing"},
			&cli.Float64Flag{Name: "reuse", Value: 0.5, Usage: "probability that skewed routing reuses the previous token's expert"},
			&cli.Float64Flag{Name: "hbm-gbs", Usage: "GPU memory bandwidth in GB/s for the floor (0 = no floor)"},
			&cli.Float64Flag{Name: "h2d-gbs", Usage: "host-to-device copy bandwidth in GB/s for the floor"},
			&cli.Float64Flag{Name: "disk-gbs", Usage: "disk read bandwidth in GB/s for the floor"},
		),
		Before: func(c *cli.Context) error {
			if err := checkDir(c.String("model"), "model directory"); err != nil {
				return err
			}
			if c.Int("tokens") <= 0 || c.Int("prefill") < 0 || c.Int("warmup") < 0 {
				return usagef("--tokens must be positive, --prefill and --warmup not negative")
			}
			switch c.String("mode") {
			case "experts", "full":
			default:
				return usagef("--mode %q: want experts or full", c.String("mode"))
			}
			switch c.String("routing") {
			case "model", "uniform", "skewed":
			default:
				return usagef("--routing %q: want model, uniform or skewed", c.String("routing"))
			}
			if z, r := c.Float64("zipf"), c.Float64("reuse"); z < 0 || r < 0 || r > 1 {
				return usagef("--zipf must be >= 0 and --reuse in [0,1]")
			}
			return nil
		},
		Action: func(c *cli.Context) error {
			m, done, err := openModel(c)
			if err != nil {
				return err
			}
			defer done()
			if rt := c.String("routing"); rt != "model" {
				ov, ok := m.Backend().(runtime.RouteOverrider)
				if !ok {
					return usagef("--routing %s needs a backend that can override routing (cuda); %s cannot", rt, m.Backend().Name())
				}
				z, reuse := c.Float64("zipf"), c.Float64("reuse")
				if rt == "uniform" {
					z, reuse = 0, 0
				}
				g, err := runtime.NewSyntheticRouter(m.Config.NumHiddenLayers, m.Config.NumExperts, z, reuse, c.Uint64("seed"))
				if err != nil {
					return err
				}
				ov.SetRouteOverride(g.Fill)
				defer ov.SetRouteOverride(nil)
			}
			if c.String("mode") == "full" {
				return benchFull(c, m)
			}
			r, err := m.BenchExperts(c.Context, c.Int("tokens"), c.Uint64("seed"))
			if err != nil {
				return err
			}
			out := map[string]any{
				"backend": m.Backend().Name(), "tokens": r.Tokens, "layers": r.Layers, "experts_per_token": r.TopK,
				"seconds": r.Elapsed.Seconds(), "experts_per_s": r.ExpertsPerSec(), "tok_per_s": r.TokPerSec(),
				"read_gb_per_s": r.ReadGBs(), "bytes_read": r.BytesRead,
				"read_s": r.Read.Seconds(), "compute_s": r.Compute.Seconds(), "route_s": r.Route.Seconds(),
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			fmt.Fprintf(c.App.Writer, "%s: %d tokens × %d layers × K=%d in %.3fs: %.1f experts/s, %.2f tok/s, expert reads %.2f GB/s (read %.3fs, compute %.3fs, route %.3fs)\n",
				m.Backend().Name(), r.Tokens, r.Layers, r.TopK, r.Elapsed.Seconds(), r.ExpertsPerSec(), r.TokPerSec(),
				r.ReadGBs(), r.Read.Seconds(), r.Compute.Seconds(), r.Route.Seconds())
			return nil
		},
	}
}

// benchFull times prefill and decode of the whole model on random token ids.
func benchFull(c *cli.Context, m *runtime.Model) error {
	ctx := c.Context
	r := rand.New(rand.NewPCG(c.Uint64("seed"), 3))
	vocab := m.Config.VocabSize
	prompt := make([]int32, max(1, c.Int("prefill")))
	for i := range prompt {
		prompt[i] = int32(r.IntN(vocab))
	}
	s, err := m.NewSession()
	if err != nil {
		return err
	}
	if len(prompt)+c.Int("tokens")+c.Int("warmup") >= s.MaxContext() {
		return usagef("--prefill + --tokens + --warmup must stay under the context limit %d (raise --ctx)", s.MaxContext())
	}
	greedy := runtime.NewSampler(runtime.SamplerOptions{})
	nop := func(int32) error { return nil }
	if w := c.Int("warmup"); w > 0 {
		if _, err := s.Generate(ctx, prompt[:1], w, greedy, nil, nop); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		s.Reset()
	}
	cnt, hasCounters := m.Backend().(runtime.ExpertCounterer)
	var before runtime.ExpertCounters
	if hasCounters {
		before = cnt.ExpertCounters()
	}
	// Prefill, timed alone (its expert traffic is not a decode token's).
	t0 := time.Now()
	if _, err := s.Forward(ctx, prompt, false); err != nil {
		return err
	}
	if sy, ok := m.Backend().(runtime.Syncer); ok {
		if err := sy.Sync(); err != nil {
			return err
		}
	}
	prefill := time.Since(t0)
	var mid runtime.ExpertCounters
	if hasCounters {
		mid = cnt.ExpertCounters()
	}
	st, err := s.Generate(ctx, prompt[len(prompt)-1:], c.Int("tokens"), greedy, nil, nop)
	if err != nil {
		return err
	}
	// Generate's "prefill" here is one token: count it as a decode step.
	decodeN := st.GeneratedTokens
	decode := st.Prefill + st.Decode
	out := map[string]any{
		"backend": m.Backend().Name(), "experts_per_token": m.TopK, "layers": m.Config.NumHiddenLayers,
		"experts": m.Config.NumExperts, "routing": c.String("routing"),
		"prefill_tokens": len(prompt), "prefill_s": prefill.Seconds(), "prefill_tok_s": float64(len(prompt)) / prefill.Seconds(),
		"decode_tokens": decodeN, "decode_s": decode.Seconds(), "decode_tok_s": float64(decodeN) / decode.Seconds(),
		"gpu_cache_gb": c.Float64("gpu-cache-gb"), "host_cache_gb": c.Float64("host-cache-gb"), "direct_io": c.Bool("direct-io"),
	}
	if c.String("routing") == "skewed" {
		out["zipf"], out["reuse"] = c.Float64("zipf"), c.Float64("reuse")
	}
	var dec runtime.ExpertCounters
	if hasCounters {
		end := cnt.ExpertCounters()
		dec = diffCounters(end, mid)
		out["prefill_counters"] = counterSummary(diffCounters(mid, before))
		out["decode_counters"] = counterSummary(dec)
		out["slots"] = map[string]int{"gpu": end.GPUSlots, "host": end.HostSlots}
	}
	var pre runtime.ExpertCounters
	if hasCounters {
		pre = diffCounters(mid, before)
	}
	fl := floors(c, m, pre, dec, len(prompt), prefill, decodeN, decode)
	for k, v := range fl {
		out[k] = v
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(c.App.Writer, "%s K=%d routing=%s: prefill %d tokens %.2f tok/s, decode %d tokens %.2f tok/s (%.2f ms/token)\n",
		m.Backend().Name(), m.TopK, c.String("routing"), len(prompt), out["prefill_tok_s"], decodeN, out["decode_tok_s"],
		1e3*decode.Seconds()/float64(decodeN))
	if hasCounters {
		fmt.Fprintf(c.App.Writer, "decode experts: %+v\n", counterSummary(dec))
	}
	if v, ok := fl["decode_floor_ms"]; ok {
		fmt.Fprintf(c.App.Writer, "decode floor %.3f ms/token (%s), E = %.3f\n", v, fl["decode_floor_bound"], fl["decode_E"])
	}
	if v, ok := fl["prefill_floor_tok_s"]; ok {
		fmt.Fprintf(c.App.Writer, "prefill floor %.1f tok/s (%s), E = %.3f\n", v, fl["prefill_floor_bound"], fl["prefill_E"])
	}
	return nil
}

func diffCounters(a, b runtime.ExpertCounters) runtime.ExpertCounters {
	d := runtime.ExpertCounters{Uses: a.Uses - b.Uses, GPUHits: a.GPUHits - b.GPUHits, HostLoads: a.HostLoads - b.HostLoads,
		DiskLoads: a.DiskLoads - b.DiskLoads, BytesH2D: a.BytesH2D - b.BytesH2D, BytesRead: a.BytesRead - b.BytesRead,
		Syncs: a.Syncs - b.Syncs, Evictions: a.Evictions - b.Evictions, GPUSlots: a.GPUSlots, HostSlots: a.HostSlots}
	for i, l := range a.Layers {
		var p runtime.LayerCounters
		if i < len(b.Layers) {
			p = b.Layers[i]
		}
		d.Layers = append(d.Layers, runtime.LayerCounters{Uses: l.Uses - p.Uses, GPUHits: l.GPUHits - p.GPUHits,
			HostLoads: l.HostLoads - p.HostLoads, DiskLoads: l.DiskLoads - p.DiskLoads})
	}
	return d
}

func counterSummary(c runtime.ExpertCounters) map[string]any {
	hit := 0.0
	if c.Uses > 0 {
		hit = float64(c.GPUHits) / float64(c.Uses)
	}
	return map[string]any{"uses": c.Uses, "gpu_hits": c.GPUHits, "gpu_hit_rate": hit, "host_loads": c.HostLoads,
		"disk_loads": c.DiskLoads, "bytes_h2d": c.BytesH2D, "bytes_read": c.BytesRead, "syncs": c.Syncs, "evictions": c.Evictions}
}

// floors computes the decode floor per token from the bytes a token must
// move: every non-expert weight but the embedding table, read from GPU memory
// (hbm), K experts per layer read from GPU memory, and the experts that were
// not resident (measured counters) copied from pinned host memory (h2d) or
// read from disk. Copies and reads could overlap compute, so the floor is the
// largest of the three times. The prefill floor (prefillFloor) is built the
// same way from the prefill's own counters.
func floors(c *cli.Context, m *runtime.Model, pre, dec runtime.ExpertCounters, P int, prefill time.Duration, n int, decode time.Duration) map[string]any {
	hbm, h2d, disk := c.Float64("hbm-gbs")*1e9, c.Float64("h2d-gbs")*1e9, c.Float64("disk-gbs")*1e9
	if hbm <= 0 || n == 0 {
		return nil
	}
	js, err := os.ReadFile(filepath.Join(m.Dir, runtime.WeightsJSON))
	if err != nil {
		return nil
	}
	man, err := formats.ParseManifest(js)
	if err != nil {
		return nil
	}
	var dense int64
	for name, t := range man.Tensors {
		if !strings.Contains(name, "embed_tokens") {
			dense += t.Size
		}
	}
	L, K, E := int64(m.Config.NumHiddenLayers), int64(m.TopK), m.Config.NumExperts
	size := m.Experts().Layout().Size
	perTok := float64(dense + L*K*size)
	tHBM := perTok / hbm
	out := map[string]any{"bytes_per_token": perTok, "hbm_gbs": hbm / 1e9}
	bound := "hbm"
	floor := tHBM
	if dec.Uses > 0 {
		if h2d > 0 {
			if t := float64(dec.HostLoads) * float64(size) / float64(n) / h2d; t > floor {
				floor, bound = t, "h2d"
			}
		}
		if disk > 0 {
			if t := float64(dec.DiskLoads) * float64(size) / float64(n) / disk; t > floor {
				floor, bound = t, "disk"
			}
		}
	}
	meas := decode.Seconds() / float64(n)
	out["decode_floor_ms"] = floor * 1e3
	out["decode_floor_bound"] = bound
	out["decode_E"] = floor / meas
	pt, pb := prefillFloor(P, m.Batch(), dense, size, int(L), int(K), E, pre.HostLoads, pre.DiskLoads, hbm, h2d, disk)
	out["prefill_floor_tok_s"] = float64(P) / pt
	out["prefill_floor_bound"] = pb
	out["prefill_E"] = pt / prefill.Seconds()
	return out
}

// prefillFloor is the floor time of a P-token prefill in batches of B and
// its bound: per batch the non-expert weights (dense bytes) and every expert
// the batch's tokens touch (E·(1−(1−K/E)^b) per layer for b tokens, uniform
// routing) read from GPU memory at hbm bytes/s; the experts the prefill
// copied from pinned host memory (hostLoads, measured) over h2d and those it
// read from disk (diskLoads) over disk. As for decode, the copies could
// overlap the compute, so the floor is the largest of the three times.
func prefillFloor(P, B int, dense, size int64, L, K, E int, hostLoads, diskLoads int64, hbm, h2d, disk float64) (float64, string) {
	var tHBM float64
	for done := 0; done < P; done += B {
		b := float64(min(B, P-done))
		touched := float64(E) * (1 - math.Pow(1-float64(K)/float64(E), b))
		tHBM += (float64(dense) + float64(L)*touched*float64(size)) / hbm
	}
	floor, bound := tHBM, "hbm"
	if t := float64(hostLoads) * float64(size) / h2d; h2d > 0 && t > floor {
		floor, bound = t, "h2d"
	}
	if t := float64(diskLoads) * float64(size) / disk; disk > 0 && t > floor {
		floor, bound = t, "disk"
	}
	return floor, bound
}
