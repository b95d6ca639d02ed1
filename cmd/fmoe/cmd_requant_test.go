package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/requant"
)

func TestParseLayerList(t *testing.T) {
	good := map[string][]int{"0": {0}, "0-3,7": {0, 1, 2, 3, 7}, " 2 , 5-6": {2, 5, 6}}
	for in, want := range good {
		if got, err := parseLayerList(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("parseLayerList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "a", "3-1", "-1", "1,,2", "0-99999999"} {
		if _, err := parseLayerList(in); err == nil {
			t.Errorf("parseLayerList(%q): no error", in)
		}
	}
}

// requantInput copies flash-moe's tiny 4-bit golden experts and gives them a
// layout.json.
func requantInput(t *testing.T) string {
	t.Helper()
	src := filepath.Join("..", "..", "testdata", "flashmoe", "tiny_4bit", "packed_experts")
	dir := t.TempDir()
	el, err := formats.NewExpertLayout(128, 64, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	p := &formats.PackLayout{Format: formats.PackFormat, Layout: formats.PackLayoutLayer, NumLayers: 4,
		NumExperts: 8, Layers: []int{0, 1, 2, 3}, Expert: *el}
	for l := range 4 {
		name := fmt.Sprintf("layer_%02d.bin", l)
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatalf("flash-moe goldens missing: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "layout.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRequantCommand(t *testing.T) {
	in := requantInput(t)
	out := filepath.Join(t.TempDir(), "out")
	// Flags before and after the input directory.
	err := newApp().Run([]string{"fmoe", "requant", "--method", "mse", in, "-o", out, "--layers", "1-2", "-q"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(out, requant.ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	var r requant.Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.Method != requant.MSE || len(r.Layers) != 2 || r.Layers[0].Layer != 1 || !r.Complete {
		t.Fatalf("report: method %s, %d layers", r.Method, len(r.Layers))
	}
	for _, args := range [][]string{
		{"fmoe", "requant", in},                                // no -o
		{"fmoe", "requant", "--to", "3bit", in, "-o", out},     // bad target
		{"fmoe", "requant", in, "-o", out, "--method", "best"}, // bad method
		{"fmoe", "requant", in, "extra", "-o", out},            // two inputs
		{"fmoe", "requant", in, "-o", out, "--layers", "9"},    // layer not in the input
		{"fmoe", "requant", in, "-o", in},                      // output = input
	} {
		var ue usageError
		if err := newApp().Run(args); !errors.As(err, &ue) {
			t.Errorf("%v: err = %v, want a usage error", args[2:], err)
		}
	}
}
