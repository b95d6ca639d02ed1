// Command fmoe prepares giant Mixture-of-Experts checkpoints for expert
// streaming and runs them: extract, pack-experts, requant, verify, run.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Exit codes, documented in every command's help.
const (
	exitOK       = 0
	exitFailure  = 1   // an operation failed (I/O, bad input, ...)
	exitUsage    = 2   // bad flags or arguments
	exitFindings = 3   // verify found damaged, missing or extra files
	exitCanceled = 130 // interrupted (Ctrl-C); no partial output is left
)

const exitCodesHelp = `EXIT CODES:
   0    success
   1    failure (bad input, I/O error); nothing half-written is left behind
   2    usage error (bad flags or arguments)
   3    verify found problems (missing, truncated, corrupt or extra files)
   130  interrupted (Ctrl-C); temporary files are removed, re-run to resume`

// usageError marks errors caused by the command line rather than the work.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// errFindings is returned by commands that completed but found problems
// (verify); the findings were already printed.
var errFindings = errors.New("problems found")

func newApp() *cli.App {
	return &cli.App{
		Name:  "fmoe",
		Usage: "prepare and run giant Mixture-of-Experts models by streaming experts from disk",
		Description: `fmoe converts a Qwen3.5-MoE checkpoint into files that let a single machine run it:
the non-expert weights in one file, every routed expert in its own file, and runs
the model reading only the experts each token uses.

   fmoe synth -o tiny-hf --preset tiny              # a small synthetic checkpoint
   fmoe extract tiny-hf -o tiny                     # model_weights.bin/.json, vocab.bin, tokenizer.bin
   fmoe pack-experts tiny-hf --bits 4 -o tiny/packed_experts
   fmoe verify tiny/packed_experts
   fmoe run --model tiny --prompt "Hello"`,
		EnableBashCompletion: true,
		Commands:             commands(),
		ExitErrHandler:       func(*cli.Context, error) {}, // main maps errors to exit codes
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newApp().RunContext(ctx, os.Args)
	os.Exit(exitCode(ctx, err))
}

// exitCode prints err (once) and maps it to the documented exit code.
func exitCode(ctx context.Context, err error) int {
	if err == nil {
		return exitOK
	}
	switch {
	case ctx.Err() != nil || errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "fmoe: interrupted; partial outputs were removed, re-run to resume")
		return exitCanceled
	case errors.Is(err, errFindings):
		return exitFindings
	}
	fmt.Fprintln(os.Stderr, "fmoe:", err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}
