package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const tinyMLX = "../../convert/testdata/tiny-mlx"

// convertApp runs fmoe with args and returns stdout, stderr and the exit code.
func convertApp(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	app := newApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.RunContext(ctx, append([]string{"fmoe"}, args...))
	return out.String(), errOut.String(), exitCode(ctx, err)
}

func TestExtractPackVerifyCLI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	model := filepath.Join(dir, "model")
	packed := filepath.Join(model, "packed_experts")
	if out, errOut, code := convertApp(t, ctx, "extract", tinyMLX, "-o", model, "--json"); code != 0 {
		t.Fatalf("extract: exit %d: %s %s", code, out, errOut)
	} else {
		var s map[string]any
		if err := json.Unmarshal([]byte(out), &s); err != nil || s["tensors"].(float64) != 163 {
			t.Errorf("extract --json: %q, %v", out, err)
		}
		if errOut != "" {
			t.Errorf("--json wrote to stderr: %q", errOut)
		}
	}
	if out, errOut, code := convertApp(t, ctx, "pack-experts", tinyMLX, "--bits", "4", "-o", packed, "--layout", "layer", "--layers", "0-2,10", "-q"); code != 0 || out != "" || errOut != "" {
		t.Fatalf("pack-experts -q: exit %d: %q %q", code, out, errOut)
	}
	for _, d := range []string{model, packed} {
		if out, errOut, code := convertApp(t, ctx, "verify", d); code != 0 {
			t.Fatalf("verify %s: exit %d: %s %s", d, code, out, errOut)
		}
	}
	if _, _, code := convertApp(t, ctx, "verify", packed, "--against", tinyMLX); code != 0 {
		t.Fatalf("verify --against: exit %d", code)
	}
	// Damage: exit 3, one line per finding.
	if err := os.Remove(filepath.Join(packed, "layer_01.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(packed, "junk"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := convertApp(t, ctx, "verify", packed, "-q")
	if code != exitFindings {
		t.Fatalf("verify with damage: exit %d, want %d", code, exitFindings)
	}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 {
		t.Errorf("want 2 finding lines, got %q", out)
	}
}

func TestConvertCLIErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"extract", tinyMLX}, exitUsage},
		{[]string{"extract", "-o", dir}, exitUsage},
		{[]string{"extract", filepath.Join(dir, "nope"), "-o", dir}, exitUsage},
		{[]string{"extract", tinyMLX, "-o", dir, "--jobs", "1000"}, exitUsage},
		{[]string{"pack-experts", tinyMLX, "-o", dir, "--bits", "3"}, exitUsage},
		{[]string{"pack-experts", tinyMLX, "-o", dir, "--layout", "diagonal"}, exitUsage},
		{[]string{"pack-experts", tinyMLX, "-o", dir, "--layers", "0-99"}, exitUsage},
		{[]string{"pack-experts", tinyMLX, "-o", dir, "--bits", "2"}, exitFailure},
		{[]string{"verify"}, exitUsage},
		{[]string{"verify", dir}, exitFindings}, // empty dir: checksums.json missing
	} {
		if out, errOut, code := convertApp(t, ctx, tc.args...); code != tc.code {
			t.Errorf("fmoe %v: exit %d, want %d (%s%s)", tc.args, code, tc.code, out, errOut)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, code := convertApp(t, canceled, "extract", tinyMLX, "-o", filepath.Join(dir, "c")); code != exitCanceled {
		t.Errorf("canceled extract: exit %d, want %d", code, exitCanceled)
	}
}
