package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure expert-only forward throughput (experts/s, tok/s)",
		ArgsUsage: " ",
		Description: `Runs only the routed-expert part of every layer (routing with the layer's router on
random hidden states, expert reads, expert compute) for --tokens tokens, like flash-moe's
main.m, and prints experts/s, tok/s and the expert read rate.

   fmoe bench --model out/demo/model --tokens 32
   fmoe bench --model ~/models/q35 -k 4 --direct-io      # cold reads from disk

` + exitCodesHelp,
		Flags: append(modelFlags(),
			&cli.IntFlag{Name: "tokens", Aliases: []string{"n"}, Value: 16, Usage: "tokens to run"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed of the random hidden states"},
		),
		Before: func(c *cli.Context) error {
			if c.Int("tokens") <= 0 {
				return usagef("--tokens must be positive")
			}
			return nil
		},
		Action: func(c *cli.Context) error {
			m, done, err := openModel(c)
			if err != nil {
				return err
			}
			defer done()
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
