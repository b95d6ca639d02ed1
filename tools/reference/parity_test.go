package reference_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fmoe/fmoe/convert"
	"github.com/fmoe/fmoe/pack"
	"github.com/fmoe/fmoe/requant"
	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
)

// golden is the part of testdata/hf/<fixture>/golden.json this test reads
// (schema fmoe-hf-golden/1, made by tools/reference/hf_goldens.py golden).
type golden struct {
	Schema        string      `json:"schema"`
	Checkpoint    string      `json:"checkpoint"`
	PromptIDs     []int32     `json:"prompt_ids"`
	DecodeIDs     []int32     `json:"decode_ids"`
	GreedyIDs     []int32     `json:"greedy_ids"`
	GreedyMargins []float64   `json:"greedy_margins"`
	PrefillLogits [][]float64 `json:"prefill_logits"`
	DecodeLogits  [][]float64 `json:"decode_logits"`
	Experts       struct {
		Bits int `json:"bits"`
	} `json:"experts"`
	Tolerance struct {
		Logits float64 `json:"logits"`
	} `json:"tolerance"`
}

var fixtures = []string{"tiny_4bit", "tiny_gate8", "small12_gate8", "tiny_2bit"}

func loadGolden(t *testing.T, fx string) *golden {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "hf", fx, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("%s: %v", fx, err)
	}
	if g.Schema != "fmoe-hf-golden/1" || len(g.PrefillLogits) != len(g.PromptIDs) ||
		len(g.DecodeLogits) != len(g.DecodeIDs) || g.Tolerance.Logits <= 0 {
		t.Fatalf("%s: malformed golden (schema %q)", fx, g.Schema)
	}
	return &g
}

// modelDir converts the fixture's MLX checkpoint with fmoe's own commands.
func modelDir(t *testing.T, fx string, g *golden) string {
	t.Helper()
	ctx := context.Background()
	ck := filepath.Join("..", "..", "testdata", "hf", fx, g.Checkpoint)
	dir := convertModel(t, ck)
	if g.Experts.Bits == 2 {
		o := requant.Options{In: filepath.Join(dir, "packed_experts"), Out: filepath.Join(dir, "packed_experts_2bit")}
		if _, err := requant.Run(ctx, o, nil); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// convertModel runs fmoe extract and pack-experts (4-bit) over the
// checkpoint ck into a temporary model directory.
func convertModel(t *testing.T, ck string) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	x, err := convert.Open(ck)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	if _, err := x.Run(ctx, dir, convert.Options{}, nil); err != nil {
		t.Fatal(err)
	}
	p, err := pack.Open(ck, pack.Options{Bits: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.Run(ctx, filepath.Join(dir, "packed_experts"), pack.RunOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

// relErr is max|got-want| / max|want| over one position's logits.
// relErr is max|got-want| / max|want|; +Inf when the lengths differ or the
// ratio is not finite (NaN logits), so "relErr(...) > tol" cannot pass on NaN.
func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) || len(want) == 0 {
		return math.Inf(1)
	}
	var d, m float64
	for i, w := range want {
		d = math.Max(d, math.Abs(float64(got[i])-w))
		m = math.Max(m, math.Abs(w))
	}
	if r := d / m; !math.IsNaN(r) && !math.IsInf(r, 0) {
		return r
	}
	return math.Inf(1)
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}

// TestHFParity: fmoe's CPU logits match HF transformers' (float32, same
// dequantized weights) at every prompt position, one-shot and token by token,
// and for the cached decode steps; greedy tokens are identical.
func TestHFParity(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx, func(t *testing.T) {
			g := loadGolden(t, fx)
			dir := modelDir(t, fx, g)
			ctx := context.Background()
			m, err := runtime.Open(ctx, dir, runtime.Options{Backend: cpu.New(), TwoBit: g.Experts.Bits == 2})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			V := len(g.PrefillLogits[0])
			tol := g.Tolerance.Logits

			one, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			all, err := one.Forward(ctx, g.PromptIDs, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != len(g.PromptIDs)*V {
				t.Fatalf("prefill returned %d logits, want %d", len(all), len(g.PromptIDs)*V)
			}
			for pos, want := range g.PrefillLogits {
				if e := relErr(all[pos*V:(pos+1)*V], want); e > tol {
					t.Errorf("one-shot prefill position %d: relative error %.3g > %g", pos, e, tol)
				}
			}

			step, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			var last []float32
			for pos, id := range g.PromptIDs {
				if last, err = step.Forward(ctx, []int32{id}, false); err != nil {
					t.Fatal(err)
				}
				if e := relErr(last, g.PrefillLogits[pos]); e > tol {
					t.Errorf("token-by-token prefill position %d: relative error %.3g > %g", pos, e, tol)
				}
			}

			next := argmax(last)
			for i, id := range g.DecodeIDs {
				if next != g.GreedyIDs[i] && g.GreedyMargins[i] > 1e-3 {
					t.Errorf("greedy token %d: got %d, HF %d (margin %.3g)", i, next, g.GreedyIDs[i], g.GreedyMargins[i])
				}
				lg, err := one.Forward(ctx, []int32{id}, false)
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(lg, g.DecodeLogits[i]); e > tol {
					t.Errorf("decode step %d (position %d): relative error %.3g > %g", i, len(g.PromptIDs)+i, e, tol)
				}
				next = argmax(lg)
			}
			k := len(g.DecodeIDs)
			if next != g.GreedyIDs[k] && g.GreedyMargins[k] > 1e-3 {
				t.Errorf("greedy token %d: got %d, HF %d", k, next, g.GreedyIDs[k])
			}
		})
	}
}
