package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fmoe/fmoe/convert"
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
}

func extractCommand() *cli.Command {
	var o extractOptions
	var flags []cli.Flag
	flags = []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "model `DIR` to write (created; required)", Destination: &o.out},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: fmt.Sprintf("parallel copy workers, 1-%d (0 = one per core, at least 4)", filecopy.MaxJobs), Destination: &o.jobs},
		&cli.BoolFlag{Name: "force", Usage: "rewrite model_weights.bin even if checksums.json says it is complete", Destination: &o.force},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress and no summary", Destination: &o.quiet},
		&cli.BoolFlag{Name: "json", Usage: "print a JSON summary on stdout (no progress)", Destination: &o.json},
	}
	return &cli.Command{
		Name:      "extract",
		Usage:     "write model_weights.bin/.json, vocab.bin and tokenizer.bin from an MLX checkpoint",
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

Outputs appear under their final names only when complete. Ctrl-C removes
unfinished files; a re-run keeps a model_weights.bin whose checksum matches
(--force rewrites it).

EXAMPLES:
   fmoe extract ~/models/Qwen3.5-397B-A17B-4bit -o model
   fmoe extract tiny-hf -o tiny --json

` + exitCodesHelp,
		Flags: flags,
		Before: func(c *cli.Context) error {
			args, err := parseInterspersed(c, flags)
			if err != nil {
				return usageError{err}
			}
			if len(args) != 1 {
				return usagef("extract takes one checkpoint directory (got %d arguments)", len(args))
			}
			o.src = args[0]
			if o.out == "" {
				return usagef("extract needs -o DIR")
			}
			if o.jobs < 0 || o.jobs > filecopy.MaxJobs {
				return usagef("--jobs %d: want 0-%d", o.jobs, filecopy.MaxJobs)
			}
			if st, err := os.Stat(o.src); err != nil || !st.IsDir() {
				return usagef("%s is not a checkpoint directory", o.src)
			}
			return nil
		},
		Action: func(c *cli.Context) error { return runExtract(c.Context, &o, c.App.Writer, c.App.ErrWriter) },
	}
}

// runExtract plans from the headers, copies, and prints the summary.
func runExtract(ctx context.Context, o *extractOptions, stdout, stderr io.Writer) error {
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	start := time.Now()
	x, err := convert.Open(o.src)
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
