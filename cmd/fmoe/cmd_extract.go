package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fmoe/fmoe/convert"
	"github.com/fmoe/fmoe/hfconv"
	"github.com/fmoe/fmoe/internal/filecopy"
)

// extractOptions are the command line of `fmoe extract`.
type extractOptions struct {
	src   string
	out   string
	jobs  int
	force bool
	quiet bool
	json  bool
	hf    hfconv.Options // quantization of an original HF release
}

func extractCommand() *cli.Command {
	var o extractOptions
	var flags []cli.Flag
	flags = []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "model `DIR` to write (created; required)", Destination: &o.out},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: fmt.Sprintf("parallel copy workers, 1-%d (0 = one per core, at least 4)", filecopy.MaxJobs), Destination: &o.jobs},
		&cli.BoolFlag{Name: "force", Usage: "rewrite model_weights.bin even if checksums.json says it is complete", Destination: &o.force},
		&cli.IntFlag{Name: "bits", Value: 4, Usage: "HF BF16/FP8 release only: bits of the quantized Linear weights, 4 or 8", Destination: &o.hf.Bits},
		&cli.IntFlag{Name: "group-size", Value: 64, Usage: "HF BF16/FP8 release only: quantization group, 32, 64 or 128", Destination: &o.hf.GroupSize},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress and no summary", Destination: &o.quiet},
		&cli.BoolFlag{Name: "json", Usage: "print a JSON summary on stdout (no progress)", Destination: &o.json},
	}
	return &cli.Command{
		Name:      "extract",
		Usage:     "write model_weights.bin/.json, vocab.bin and tokenizer.bin from an MLX or original HF checkpoint",
		ArgsUsage: "<hf-dir>",
		Description: `Reads an MLX-quantized Qwen3.5-MoE checkpoint (config.json, model.safetensors or
model.safetensors.index.json + shards, tokenizer.json) and writes into -o DIR:

   model_weights.bin    every non-expert tensor, byte-identical to flash-moe's
                        extract_weights.py (sorted names, 64-byte aligned)
   model_weights.json   the manifest; its config block comes from config.json
   vocab.bin            token id -> bytes (flash-moe format)
   tokenizer.bin        BPE vocab + merges (flash-moe BPET v1)
   tokenizer.json, tokenizer_config.json   copied when present
   checksums.json       size and xxh3-64 of each file (fmoe verify DIR)

Skipped: vision tensors (vision_tower.*, model.visual.*), mtp.* and the routed
experts (.switch_mlp.*), which fmoe pack-experts writes.

An original Hugging Face release (BF16, F16, F32 or FP8 E4M3 with
weight_scale_inv block scales; fused experts.gate_up_proj) is detected and
converted on the fly, tensor by tensor, with mlx-lm's rules (norm +1, conv1d
axis, gate/up split, A_log kept) and MLX's affine quantizer: --bits (4) and
--group-size (64) for Linear weights, 8-bit mlp.gate and shared_expert_gate.
The output is what the MLX path writes; no intermediate checkpoint is stored.

Outputs appear under their final names only when complete. Ctrl-C removes
unfinished files; a re-run keeps a model_weights.bin whose checksum matches
(--force rewrites it).

EXAMPLES:
   fmoe extract ~/models/Qwen3.5-397B-A17B-4bit -o model
   fmoe extract tiny-hf -o tiny --json
   fmoe extract ~/models/Qwen3.5-397B-A17B-FP8 -o model     # original release

` + exitCodesHelp,
		Flags: flags,
		Before: func(c *cli.Context) error {
			arg, err := oneArg(c, flags, "extract takes one checkpoint directory")
			if err != nil {
				return err
			}
			o.src = arg
			if o.out == "" {
				return usagef("extract needs -o DIR")
			}
			return firstErr(checkHFQuant(o.hf.Bits, o.hf.GroupSize), checkJobs(o.jobs), checkDir(o.src, "checkpoint directory"))
		},
		Action: func(c *cli.Context) error { return runExtract(c.Context, &o, c.App.Writer, c.App.ErrWriter) },
	}
}

// runExtract plans from the headers, copies, and prints the summary.
func runExtract(ctx context.Context, o *extractOptions, stdout, stderr io.Writer) error {
	stdout, stderr = stdio(stdout, stderr)
	start := time.Now()
	x, err := convert.OpenHF(o.src, o.hf)
	if err != nil {
		return err
	}
	defer x.Close()
	st := startStage(stderr, "extract "+convert.WeightsFile, x.TotalBytes(), o.quiet || o.json)
	s, err := x.Run(ctx, o.out, convert.Options{Jobs: o.jobs, Force: o.force}, st)
	st.Done()
	if err != nil {
		return err
	}
	s.Seconds = time.Since(start).Seconds()
	if o.json {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"command": "extract", "input": o.src, "output": o.out, "tensors": s.Tensors, "skipped": s.Skipped,
			"bytes": s.Bytes, "reused": s.Reused, "files": s.Files, "warnings": s.Warnings,
			"seconds": s.Seconds, "gb_per_s": float64(s.Bytes) / 1e9 / max(s.Seconds, 1e-9),
		})
	}
	if o.quiet {
		return nil
	}
	for _, w := range s.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	note := ""
	if s.Reused {
		note = fmt.Sprintf(" (%s kept: checksum matches)", convert.WeightsFile)
	}
	fmt.Fprintf(stdout, "extract: %d tensors, %d files in %s: %s%s\n", s.Tensors, len(s.Files), o.out,
		rate(s.Bytes, time.Since(start)), note)
	return nil
}

// checkHFQuant validates the quantization asked for an HF release.
func checkHFQuant(bits, group int) error {
	if bits != 4 && bits != 8 {
		return usagef("--bits %d: want 4 or 8", bits)
	}
	switch group {
	case 32, 64, 128:
		return nil
	}
	return usagef("--group-size %d: want 32, 64 or 128", group)
}
