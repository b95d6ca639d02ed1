package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/filecopy"
	"github.com/fmoe/fmoe/pack"
)

// packOptions are the command line of `fmoe pack-experts`.
type packOptions struct {
	src    string
	out    string
	layers string
	opts   pack.Options
	run    pack.RunOptions
	quiet  bool
	json   bool
}

func packExpertsCommand() *cli.Command {
	var o packOptions
	var flags []cli.Flag
	flags = []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "`DIR` for the packed experts (created; required)", Destination: &o.out},
		&cli.IntFlag{Name: "bits", Value: 4, Usage: "bits of the source experts (4 for an MLX 4-bit checkpoint; 2-bit comes from fmoe requant)", Destination: &o.opts.Bits},
		&cli.IntFlag{Name: "group-size", Value: 64, Usage: "HF BF16/FP8 release only: quantization group, 32, 64 or 128 (MLX sources keep theirs)", Destination: &o.opts.GroupSize},
		&cli.StringFlag{Name: "layout", Value: formats.PackLayoutExpert, Usage: "expert: one file per expert (layer_XX_expert_YYYY.bin); layer: one file per layer (layer_XX.bin, flash-moe's Metal layout)", Destination: &o.opts.Layout},
		&cli.StringFlag{Name: "layers", Usage: "layers to pack, e.g. 0-3,7 (default: all)", Destination: &o.layers},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: fmt.Sprintf("parallel copy workers, 1-%d (0 = one per core, at least 4)", filecopy.MaxJobs), Destination: &o.run.Jobs},
		&cli.BoolFlag{Name: "force", Usage: "redo files a previous run finished; replace a different layout in DIR", Destination: &o.run.Force},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress and no summary", Destination: &o.quiet},
		&cli.BoolFlag{Name: "json", Usage: "print a JSON summary on stdout (no progress)", Destination: &o.json},
	}
	return &cli.Command{
		Name:      "pack-experts",
		Usage:     "copy every routed expert into its own file (or one file per layer)",
		ArgsUsage: "<hf-dir>",
		Description: `Reads the stacked routed-expert tensors of an MLX-quantized Qwen3.5-MoE checkpoint
(…mlp.switch_mlp.{gate,up,down}_proj.{weight,scales,biases}) and writes each
expert as one contiguous block: gate/up/down × weight/scales/biases, the bytes
flash-moe's repack_experts.py writes. Dimensions come from config.json; nothing
is hard-coded (Qwen3.5-397B-A17B 4-bit: 7,077,888 bytes per expert).

Files in -o DIR:
   layer_XX_expert_YYYY.bin   --layout expert (default), or
   layer_XX.bin               --layout layer: expert e at e × expert_size
   layout.json                the layout (fmoe run and fmoe requant read it)
   checksums.json             size and xxh3-64 of each file (fmoe verify DIR)

Memory stays bounded (workers × 2 × 4 MiB) whatever the model size. Files
appear under their final names only when complete; Ctrl-C removes unfinished
ones and records the finished ones, and a re-run skips files whose size and
checksum match (--force redoes them).

An original Hugging Face release (BF16/F16/F32/FP8, fused experts) is
converted on the fly: experts are quantized to --bits (4 or 8) with group
--group-size, exactly as fmoe extract does for the other weights. Packing more layers into the same DIR
later extends layout.json.

EXAMPLES:
   fmoe pack-experts ~/models/Qwen3.5-397B-A17B-4bit --bits 4 -o model/packed_experts
   fmoe pack-experts tiny-hf --bits 4 -o tiny/packed_experts --layout layer
   fmoe pack-experts tiny-hf --bits 4 -o tiny/packed_experts --layers 0-3,7 --jobs 8

` + exitCodesHelp,
		Flags: flags,
		Before: func(c *cli.Context) error {
			arg, err := oneArg(c, flags, "pack-experts takes one checkpoint directory")
			if err != nil {
				return err
			}
			o.src = arg
			if o.out == "" {
				return usagef("pack-experts needs -o DIR")
			}
			switch o.opts.Bits {
			case 2, 4, 8:
			default:
				return usagef("--bits %d: want 4 (or the bits of the source experts: 2, 4 or 8)", o.opts.Bits)
			}
			if err := checkHFQuant(4, o.opts.GroupSize); err != nil {
				return err
			}
			if o.opts.Layout != formats.PackLayoutExpert && o.opts.Layout != formats.PackLayoutLayer {
				return usagef("--layout %q: want expert or layer", o.opts.Layout)
			}
			return firstErr(checkJobs(o.run.Jobs), checkDir(o.src, "checkpoint directory"))
		},
		Action: func(c *cli.Context) error { return runPackExperts(c.Context, &o, c.App.Writer, c.App.ErrWriter) },
	}
}

// runPackExperts plans from the headers, packs, and prints the summary.
func runPackExperts(ctx context.Context, o *packOptions, stdout, stderr io.Writer) error {
	stdout, stderr = stdio(stdout, stderr)
	start := time.Now()
	if o.layers != "" {
		// The layer count is only known from config.json: parse against a
		// generous bound here, PlanPack checks the real one.
		layers, err := pack.ParseLayers(o.layers, 1<<16)
		if err != nil {
			return usageError{err}
		}
		o.opts.Layers = layers
	}
	pk, err := pack.Open(o.src, o.opts)
	if err != nil {
		if errors.Is(err, pack.ErrLayers) {
			return usageError{err}
		}
		return err
	}
	defer pk.Close()
	st := startStage(stderr, "pack-experts", pk.TotalBytes(), o.quiet || o.json)
	s, err := pk.Run(ctx, o.out, o.run, st)
	st.Done()
	if err != nil {
		return err
	}
	s.Seconds = time.Since(start).Seconds()
	if o.json {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"command": "pack-experts", "input": o.src, "output": o.out, "layout": s.Layout, "bits": s.Bits,
			"layers": s.Layers, "files": s.Files, "written": s.Written, "skipped": s.Skipped, "bytes": s.Bytes,
			"bytes_skipped": s.BytesSkipped, "seconds": s.Seconds, "gb_per_s": float64(s.Bytes) / 1e9 / max(s.Seconds, 1e-9),
		})
	}
	if o.quiet {
		return nil
	}
	fmt.Fprintf(stdout, "pack-experts: %d layers, %d files (%d written, %d kept) in %s: %s\n",
		len(s.Layers), s.Files, s.Written, s.Skipped, o.out, rate(s.Bytes, time.Since(start)))
	return nil
}
