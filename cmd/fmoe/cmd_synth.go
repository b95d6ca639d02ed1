package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/hfconv"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/synth"
)

// synthOptions are the command line of `fmoe synth`.
type synthOptions struct {
	out     string
	preset  string
	opts    synth.Options
	workers int
	force   bool
	quiet   bool
	json    bool
	format  string // mlx (default), hf-bf16 or hf-fp8
}

// maxTwinBytes bounds --format hf-*: the HF twin is built in memory.
const maxTwinBytes = 2 << 30

func synthCommand() *cli.Command {
	var o synthOptions
	intFlag := func(name, usage string, dst *int) *cli.IntFlag {
		return &cli.IntFlag{Name: name, Usage: usage + " (default: the preset's)", Destination: dst}
	}
	ov := struct {
		layers, experts, topK, hidden, inter, shared, vocab, heads, kvHeads, headDim int
		bits, gateBits, group, shards                                                int
		seed                                                                         uint64
	}{}
	return &cli.Command{
		Name:      "synth",
		Usage:     "write a synthetic MLX-format Qwen3.5-MoE checkpoint (random but valid weights)",
		ArgsUsage: " ",
		Description: `Writes a checkpoint laid out exactly like an mlx-community Qwen3.5-MoE 4-bit
repository: config.json (text_config + quantization block), sharded safetensors
with language_model.* tensors and stacked switch_mlp experts,
model.safetensors.index.json, and the real Qwen3 tokenizer.json and
tokenizer_config.json. Weights are random (deterministic in --seed),
quantized with MLX's affine quantizer, and numerically sane.

Presets:
   tiny         hidden 128, 4 layers, 8 experts, top-2  (~25 MB, < 1 s)
   small        hidden 1024, 8 layers, 32 experts, top-4 (~300 MB)
   397b-shape   the exact Qwen3.5-397B-A17B dimensions (~220 GB as is;
                shrink with --layers/--experts)

EXAMPLES:
   fmoe synth -o tiny-hf --preset tiny
   fmoe synth -o bench-hf --preset 397b-shape --layers 2 --experts 64
   fmoe synth -o gate8 --preset small --gate-bits 8 --seed 42
   fmoe synth -o tiny-bf16 --preset tiny --format hf-bf16   # original-release layout
   fmoe synth -o tiny-fp8 --preset tiny --format hf-fp8     # FP8 E4M3, 128x128 block scales

--format hf-bf16|hf-fp8 writes the same model as an original Hugging Face
release instead (model.language_model.* names, fused experts.gate_up_proj,
zero-centred norms, conv1d [C,1,K]; FP8 Linear weights with weight_scale_inv):
the input fmoe extract and pack-experts convert on the fly. The weights are the
MLX model's dequantized values. It is built in memory (at most 2 GiB of MLX
checkpoint).

` + exitCodesHelp,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `DIR` (created)", Required: true, Destination: &o.out},
			&cli.StringFlag{Name: "preset", Value: "tiny", Usage: "tiny, small or 397b-shape", Destination: &o.preset},
			&cli.StringFlag{Name: "format", Value: "mlx", Usage: "mlx (MLX 4-bit repository), hf-bf16 or hf-fp8 (original-release layout)", Destination: &o.format},
			intFlag("layers", "number of decoder layers", &ov.layers),
			intFlag("experts", "routed experts per layer", &ov.experts),
			intFlag("top-k", "experts per token", &ov.topK),
			intFlag("hidden", "hidden size", &ov.hidden),
			intFlag("intermediate", "routed expert intermediate size", &ov.inter),
			intFlag("shared-intermediate", "shared expert intermediate size", &ov.shared),
			intFlag("vocab", "vocabulary size (≥ 151669 for the bundled tokenizer)", &ov.vocab),
			intFlag("heads", "full-attention query heads", &ov.heads),
			intFlag("kv-heads", "full-attention key/value heads", &ov.kvHeads),
			intFlag("head-dim", "full-attention head dimension", &ov.headDim),
			intFlag("bits", "quantization bits (2, 4, 8)", &ov.bits),
			intFlag("gate-bits", "bits of mlp.gate and mlp.shared_expert_gate (8 = config override)", &ov.gateBits),
			intFlag("group-size", "quantization group size", &ov.group),
			intFlag("shards", "number of safetensors shards (0 = 5 GiB each)", &ov.shards),
			&cli.Uint64Flag{Name: "seed", Usage: "random seed (default: the preset's)", Destination: &ov.seed},
			&cli.IntFlag{Name: "workers", Usage: "parallel generators (0 = all cores)", Destination: &o.workers},
			&cli.BoolFlag{Name: "force", Usage: "write into a directory that already holds a config.json", Destination: &o.force},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress or summary", Destination: &o.quiet},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary on stdout", Destination: &o.json},
		},
		Before: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("synth takes no arguments (got %q); use -o DIR", c.Args().First())
			}
			p, err := synth.Preset(o.preset)
			if err != nil {
				return usageError{err}
			}
			set := func(name string, dst *int, v int) {
				if c.IsSet(name) {
					*dst = v
				}
			}
			set("layers", &p.Layers, ov.layers)
			set("experts", &p.Experts, ov.experts)
			set("top-k", &p.TopK, ov.topK)
			set("hidden", &p.Hidden, ov.hidden)
			set("intermediate", &p.Intermediate, ov.inter)
			set("shared-intermediate", &p.SharedIntermediate, ov.shared)
			set("vocab", &p.Vocab, ov.vocab)
			set("heads", &p.Heads, ov.heads)
			set("kv-heads", &p.KVHeads, ov.kvHeads)
			set("head-dim", &p.HeadDim, ov.headDim)
			set("bits", &p.Bits, ov.bits)
			set("gate-bits", &p.GateBits, ov.gateBits)
			set("group-size", &p.GroupSize, ov.group)
			set("shards", &p.Shards, ov.shards)
			if c.IsSet("seed") {
				p.Seed = ov.seed
			}
			if c.IsSet("experts") && !c.IsSet("top-k") && p.TopK > p.Experts {
				p.TopK = p.Experts
			}
			if err := p.Validate(); err != nil {
				return usageError{err}
			}
			o.opts = p
			return nil
		},
		Action: func(c *cli.Context) error { return runSynth(c.Context, &o, c.App.Writer, c.App.ErrWriter) },
	}
}

// runSynth plans and writes the checkpoint.
func runSynth(ctx context.Context, o *synthOptions, stdout, stderr io.Writer) error {
	if stderr == nil {
		stderr = os.Stderr
	}
	if _, err := os.Stat(filepath.Join(o.out, "config.json")); err == nil && !o.force {
		return usagef("%s already holds a checkpoint; use --force to overwrite it", o.out)
	}
	plan, err := synth.NewPlan(o.opts)
	if err != nil {
		return err
	}
	switch o.format {
	case "mlx":
	case string(hfconv.TwinBF16), string(hfconv.TwinFP8):
		if plan.Bytes() > maxTwinBytes {
			return usagef("--format %s builds the model in memory: %.1f GB is over %d GiB; use a smaller preset or --layers/--experts", o.format, float64(plan.Bytes())/1e9, maxTwinBytes>>30)
		}
		return runSynthTwin(ctx, o, plan, stdout, stderr)
	default:
		return usagef("--format %q: want mlx, hf-bf16 or hf-fp8", o.format)
	}
	start := time.Now()
	var written progress.Sum
	stop := startProgressLine(stderr, "synth", plan.Bytes(), &written, o.quiet || o.json)
	err = synth.Write(ctx, o.out, plan, o.workers, &written)
	stop()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("synth %s: %w", o.out, err)
	}
	secs := time.Since(start).Seconds()
	if o.json {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"output": o.out, "preset": o.preset, "bytes": plan.Bytes(), "shards": len(plan.Shards),
			"tensors": len(plan.WeightMap()), "seconds": secs, "gb_per_s": float64(plan.Bytes()) / 1e9 / max(secs, 1e-9),
		})
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "synth: wrote %s (%d shards, %d tensors, %.2f GB) in %.1f s, %.2f GB/s\n",
			o.out, len(plan.Shards), len(plan.WeightMap()), float64(plan.Bytes())/1e9, secs, float64(plan.Bytes())/1e9/max(secs, 1e-9))
	}
	return nil
}

// runSynthTwin synthesizes the MLX checkpoint in a temporary directory
// beside the output and writes its original-HF-layout twin into o.out.
func runSynthTwin(ctx context.Context, o *synthOptions, plan *synth.Plan, stdout, stderr io.Writer) error {
	start := time.Now()
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(o.out, ".mlx-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := synth.Write(ctx, tmp, plan, o.workers, nil); err != nil {
		return fmt.Errorf("synth %s: %w", o.out, err)
	}
	ck, err := checkpoint.Open(tmp)
	if err != nil {
		return err
	}
	defer ck.Close()
	if err := hfconv.WriteTwin(ctx, ck, o.out, hfconv.TwinFormat(o.format)); err != nil {
		return fmt.Errorf("synth %s: %w", o.out, err)
	}
	secs := time.Since(start).Seconds()
	if o.json {
		return json.NewEncoder(stdout).Encode(map[string]any{"output": o.out, "preset": o.preset, "format": o.format, "seconds": secs})
	}
	if !o.quiet {
		fmt.Fprintf(stderr, "synth: wrote %s (%s, %d tensors converted from the %.2f GB MLX model) in %.1f s\n",
			o.out, o.format, len(plan.WeightMap()), float64(plan.Bytes())/1e9, secs)
	}
	return nil
}
