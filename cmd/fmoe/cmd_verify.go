package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fmoe/fmoe/internal/filecopy"
	"github.com/fmoe/fmoe/pack"
)

// verifyOptions are the command line of `fmoe verify`.
type verifyOptions struct {
	dir   string
	opts  pack.VerifyOptions
	quiet bool
	json  bool
}

func verifyCommand() *cli.Command {
	var o verifyOptions
	var flags []cli.Flag
	flags = []cli.Flag{
		&cli.StringFlag{Name: "against", Usage: "also compare every packed expert with the source checkpoint `HF-DIR`", Destination: &o.opts.Against},
		&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: fmt.Sprintf("files checked in parallel, 1-%d (0 = one per core, at least 4)", filecopy.MaxJobs), Destination: &o.opts.Jobs},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print findings only", Destination: &o.quiet},
		&cli.BoolFlag{Name: "json", Usage: "print findings and a summary as JSON on stdout", Destination: &o.json},
	}
	return &cli.Command{
		Name:      "verify",
		Usage:     "re-hash a directory written by extract, pack-experts or requant and report problems",
		ArgsUsage: "<dir>",
		Description: `Re-hashes every file listed in DIR/checksums.json (and every data file that
DIR/layout.json expects) in parallel and prints one line per problem:

   missing        an expected file is absent
   extra          a file nobody expects (e.g. a temporary file of a killed run)
   truncated / size mismatch
   corrupt        the content does not match its recorded xxh3-64 checksum
   unrecorded     a data file without a checksum (an interrupted run: re-run it)
   content        (--against) a packed expert component differs from the
                  source tensor; the line names layer, expert and component

Subdirectories are not checked (verify model/packed_experts separately).

EXAMPLES:
   fmoe verify model
   fmoe verify model/packed_experts --against ~/models/Qwen3.5-397B-A17B-4bit
   fmoe verify tiny/packed_experts --json

` + exitCodesHelp,
		Flags: flags,
		Before: func(c *cli.Context) error {
			arg, err := oneArg(c, flags, "verify takes one directory")
			if err != nil {
				return err
			}
			o.dir = arg
			return firstErr(checkJobs(o.opts.Jobs), checkDir(o.dir, "directory"))
		},
		Action: func(c *cli.Context) error { return runVerify(c.Context, &o, c.App.Writer, c.App.ErrWriter) },
	}
}

// runVerify checks the directory and prints one line per finding; it
// returns errFindings (exit 3) when there is any.
func runVerify(ctx context.Context, o *verifyOptions, stdout, stderr io.Writer) error {
	stdout, stderr = stdio(stdout, stderr)
	start := time.Now()
	st := startStage(stderr, "verify", dirBytes(o.dir), o.quiet || o.json)
	findings, err := pack.Verify(ctx, o.dir, o.opts, st)
	st.Done()
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if o.json {
		lines := make([]string, len(findings))
		for i, f := range findings {
			lines[i] = f.Error()
		}
		if err := json.NewEncoder(stdout).Encode(map[string]any{
			"command": "verify", "dir": o.dir, "against": o.opts.Against, "ok": len(findings) == 0,
			"findings": lines, "bytes": st.sum.Load(), "seconds": secs,
			"gb_per_s": float64(st.sum.Load()) / 1e9 / max(secs, 1e-9),
		}); err != nil {
			return err
		}
	} else {
		for _, f := range findings {
			fmt.Fprintln(stdout, f)
		}
		if !o.quiet {
			status := "ok"
			if len(findings) > 0 {
				status = fmt.Sprintf("%d problems", len(findings))
			}
			fmt.Fprintf(stdout, "verify %s: %s; read %s\n", o.dir, status, rate(st.sum.Load(), time.Since(start)))
		}
	}
	if len(findings) > 0 {
		return errFindings
	}
	return nil
}

// dirBytes sums the sizes of the regular files in dir (the progress total;
// --against reads more).
func dirBytes(dir string) int64 {
	es, _ := os.ReadDir(dir)
	var n int64
	for _, e := range es {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}
