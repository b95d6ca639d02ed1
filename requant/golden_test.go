package requant

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fmoe/fmoe/formats"
)

// The goldens are flash-moe's own repack_experts_2bit.py run on the packed
// 4-bit experts of the committed MLX fixtures (tools/reference/flashmoe_goldens.sh
// made them; see testdata/flashmoe/*/SHA256SUMS).
var goldenFixtures = []string{"tiny_4bit", "small12_gate8"}

func goldenDims(t *testing.T, fx string) (hidden, inter, layers, experts int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "hf", fx, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := formats.ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.HiddenSize, cfg.MoEIntermediateSize, cfg.NumHiddenLayers, cfg.NumExperts
}

func TestFlashMoEGoldens(t *testing.T) {
	root := filepath.Join("..", "testdata", "flashmoe")
	if _, err := os.Stat(root); err != nil {
		t.Fatalf("flash-moe goldens missing (%v): run tools/reference/flashmoe_goldens.sh — the minmax method is NOT checked against flash-moe", err)
	}
	for _, fx := range goldenFixtures {
		t.Run(fx, func(t *testing.T) {
			hidden, inter, numLayers, numExperts := goldenDims(t, fx)
			dir := filepath.Join(root, fx)
			// Give the 4-bit goldens a layout.json in a scratch copy and run
			// the whole command path over them.
			in := t.TempDir()
			el, err := formats.NewExpertLayout(hidden, inter, 4, 64)
			if err != nil {
				t.Fatal(err)
			}
			p := &formats.PackLayout{Format: formats.PackFormat, Layout: formats.PackLayoutLayer,
				NumLayers: numLayers, NumExperts: numExperts, Expert: *el}
			for l := range numLayers {
				p.Layers = append(p.Layers, l)
				name := fmt.Sprintf("layer_%02d.bin", l)
				b, err := os.ReadFile(filepath.Join(dir, "packed_experts", name))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(in, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			data, _ := json.Marshal(p)
			if err := os.WriteFile(filepath.Join(in, LayoutFile), data, 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			if _, err := Run(context.Background(), Options{In: in, Out: out, Jobs: 3}, nil); err != nil {
				t.Fatal(err)
			}
			for l := range numLayers {
				name := fmt.Sprintf("layer_%02d.bin", l)
				want, err := os.ReadFile(filepath.Join(dir, "packed_experts_2bit", name))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(out, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s: %s differs from flash-moe's (%d vs %d bytes, first difference at %d)",
						fx, name, len(got), len(want), firstDiff(got, want))
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
