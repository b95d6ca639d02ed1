package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/requant"
)

// requantOptions are the command line of `fmoe requant`.
type requantOptions struct {
	to    string
	opts  requant.Options
	quiet bool
	json  bool
}

func requantCommand() *cli.Command {
	var o requantOptions
	var layers, method string
	var flags []cli.Flag
	flags = []cli.Flag{
		&cli.StringFlag{Name: "to", Value: "2bit", Usage: "target format (only 2bit)", Destination: &o.to},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `DIR` (created; required)", Destination: &o.opts.Out},
		&cli.StringFlag{Name: "layers", Usage: "layers to convert, e.g. 0-3,7 (default: all in the input)", Destination: &layers},
		&cli.StringFlag{Name: "method", Value: string(requant.MinMax), Usage: "minmax or mse", Destination: &method},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: "worker goroutines (0 = all cores)", Destination: &o.opts.Jobs},
		&cli.BoolFlag{Name: "force", Usage: "redo outputs a previous run finished", Destination: &o.opts.Force},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress, report or summary", Destination: &o.quiet},
		&cli.BoolFlag{Name: "json", Usage: "print a JSON summary (with the report) on stdout", Destination: &o.json},
	}
	return &cli.Command{
		Name:      "requant",
		Usage:     "requantize packed 4-bit experts to 2-bit (flash-moe's format), with a quality report",
		ArgsUsage: "<in-dir>",
		Description: `Reads a directory of packed 4-bit experts (layout.json, one file per expert or
per layer, as pack-experts writes it) and writes the same experts at 2 bits in
the same layout into -o DIR, with layout.json, checksums.json (so fmoe verify
works on it) and requant_report.json: RMSE and max abs error of the 2-bit
weights against the 4-bit ones, per layer and projection (also printed).

Methods:
   minmax   flash-moe's repack_experts_2bit.py, byte for byte (default)
   mse      per-group least-squares search for the 2-bit scale and offset;
            same file format, lower error (~25-30% lower RMSE), slower

Uses all cores, one expert at a time per worker. Outputs appear under their
final names only when complete; Ctrl-C removes unfinished ones and a re-run
resumes, keeping outputs whose checksums match (--force redoes them).

EXAMPLES:
   fmoe requant --to 2bit model/packed_experts -o model/packed_experts_2bit
   fmoe requant --to 2bit in -o out --method mse --layers 0-3,7

` + exitCodesHelp,
		Flags: flags,
		Before: func(c *cli.Context) error {
			// Flags may follow the input directory (fmoe requant IN -o OUT).
			arg, err := oneArg(c, flags, "requant takes one input directory")
			if err != nil {
				return err
			}
			o.opts.In = arg
			if o.opts.Out == "" {
				return usagef("requant needs -o DIR")
			}
			if o.to != "2bit" {
				return usagef("--to %q: only 2bit is supported", o.to)
			}
			m, err := requant.ParseMethod(method)
			if err != nil {
				return usageError{err}
			}
			o.opts.Method = m
			if o.opts.Jobs < 0 {
				return usagef("--jobs %d: must be >= 0", o.opts.Jobs)
			}
			if layers != "" {
				if o.opts.Layers, err = parseLayerList(layers); err != nil {
					return usageError{err}
				}
			}
			return nil
		},
		Action: func(c *cli.Context) error { return runRequant(c.Context, &o, c.App.Writer, c.App.ErrWriter) },
	}
}

// runRequant runs the conversion and prints the report and a summary.
func runRequant(ctx context.Context, o *requantOptions, stdout, stderr io.Writer) error {
	stdout, stderr = stdio(stdout, stderr)
	start := time.Now()
	var done progress.Sum
	total, err := requant.InputBytes(o.opts)
	if err != nil {
		if errors.Is(err, requant.ErrUsage) || errors.Is(err, requant.ErrOutput) {
			return usageError{err}
		}
		return err
	}
	stop := startProgressLine(stderr, "requant", total, &done, o.quiet || o.json)
	res, err := requant.Run(ctx, o.opts, &done)
	stop()
	if err != nil {
		if errors.Is(err, requant.ErrUsage) || errors.Is(err, requant.ErrOutput) {
			return usageError{err}
		}
		return err
	}
	secs := max(time.Since(start).Seconds(), 1e-9)
	experts := float64(res.BytesIn) / float64(max(expertSize4(res), 1))
	if o.json {
		return json.NewEncoder(stdout).Encode(map[string]any{
			"input": o.opts.In, "output": o.opts.Out, "method": o.opts.Method, "files": res.Files,
			"skipped": res.Skipped, "bytes_in": res.BytesIn, "bytes_out": res.BytesOut, "seconds": secs,
			"gb_per_s": float64(res.BytesIn) / 1e9 / secs, "report": res.Report,
		})
	}
	if o.quiet {
		return nil
	}
	if err := res.Report.WriteText(stdout); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "requant: %s -> %s (%s): %d files written, %d kept, %.0f experts, %.2f GB read in %.1f s (%.2f GB/s, %.1f experts/s)\n",
		o.opts.In, o.opts.Out, o.opts.Method, res.Files, res.Skipped, experts, float64(res.BytesIn)/1e9, secs,
		float64(res.BytesIn)/1e9/secs, experts/secs)
	return nil
}

func expertSize4(res *requant.Result) int64 {
	if res.Report == nil || res.Report.Experts == 0 {
		return 0
	}
	return res.BytesIn / int64(res.Report.Experts)
}

// oneArg parses c's arguments, flags allowed after them (parseInterspersed),
// and returns the one positional argument; takes is how the usage error
// names it ("verify takes one directory").
func oneArg(c *cli.Context, flags []cli.Flag, takes string) (string, error) {
	args, err := parseInterspersed(c, flags)
	if err != nil {
		return "", usageError{err}
	}
	if len(args) != 1 {
		return "", usagef("%s (got %d arguments)", takes, len(args))
	}
	return args[0], nil
}

// parseInterspersed parses flags that follow positional arguments (urfave/cli
// stops at the first positional one) into the same destinations, and returns
// the positional arguments.
func parseInterspersed(c *cli.Context, flags []cli.Flag) ([]string, error) {
	args := c.Args().Slice()
	set := flag.NewFlagSet("requant", flag.ContinueOnError)
	set.SetOutput(io.Discard)
	// Apply resets every destination to its default: restore what the
	// flags before the positional arguments set.
	given := map[string]string{}
	for _, f := range flags {
		if name := f.Names()[0]; c.IsSet(name) {
			given[name] = fmt.Sprint(c.Value(name))
		}
	}
	for _, f := range flags {
		if err := f.Apply(set); err != nil {
			return nil, err
		}
	}
	for name, v := range given {
		if err := set.Set(name, v); err != nil {
			return nil, err
		}
	}
	var pos []string
	for len(args) > 0 {
		if a := args[0]; a == "--" {
			return append(pos, args[1:]...), nil
		} else if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			args = args[1:]
			continue
		}
		// Parse one flag (and its value); the rest is handled next round.
		before := len(args)
		if err := set.Parse(args); err != nil {
			return nil, err
		}
		args = set.Args()
		if len(args) == before {
			break
		}
	}
	return pos, nil
}

// parseLayerList parses "0-3,7" into [0 1 2 3 7].
func parseLayerList(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil || a < 0 || b < a || b-a > 1<<16 {
			return nil, fmt.Errorf("--layers %q: want a list like 0-3,7", s)
		}
		for l := a; l <= b; l++ {
			out = append(out, l)
		}
	}
	return out, nil
}
