package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestHFReleaseCLI runs the issue-6 path through the CLI: synth writes the
// tiny model as an FP8 original release, extract and pack-experts convert
// it on the fly, verify (incl. --against the release) is clean, and the
// converted model runs.
func TestHFReleaseCLI(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	rel, model := filepath.Join(dir, "fp8"), filepath.Join(dir, "model")
	packed := filepath.Join(model, "packed_experts")
	steps := [][]string{
		{"synth", "--preset", "tiny", "--format", "hf-fp8", "-o", rel, "-q"},
		{"extract", rel, "-o", model, "-q"},
		{"pack-experts", rel, "--bits", "4", "-o", packed, "-q"},
		{"verify", model},
		{"verify", packed, "--against", rel},
		{"run", "--model", model, "--prompt", "Hello", "--tokens", "3", "--backend", "cpu"},
	}
	for _, args := range steps {
		if out, errOut, code := convertApp(t, ctx, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s %s", args, code, out, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(rel, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{
		{"synth", "--preset", "tiny", "--format", "gguf", "-o", filepath.Join(dir, "x")},
		{"extract", rel, "-o", filepath.Join(dir, "y"), "--group-size", "48"},
		{"extract", rel, "-o", filepath.Join(dir, "y"), "--bits", "3"},
	} {
		if _, _, code := convertApp(t, ctx, bad...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", bad, code, exitUsage)
		}
	}
}
