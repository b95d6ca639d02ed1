package reference_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
)

// hfconvGolden is testdata/hfconv/golden.json (tools/reference/hf_convert_goldens.py).
type hfconvGolden struct {
	IDs     []int32 `json:"ids"`
	Formats map[string]struct {
		NLLOrig float64   `json:"nll_orig"`
		NLLQ4   float64   `json:"nll_q4"`
		PerPos  []float64 `json:"nll_q4_per_position"`
	} `json:"formats"`
}

// TestHFReleaseConversion converts the original-layout BF16 and FP8
// checkpoints that transformers' Qwen3_5MoeForCausalLM defined (on the fly:
// extract and pack-experts read them through hfconv), runs fmoe's CPU
// runtime teacher-forced over the reference ids, and checks the mean NLL
// against HF's: within the 4-bit quantization gap the same script measured
// (HF on the MLX-quantized weights vs HF on the originals), and, since fmoe
// quantizes exactly the way the script does, equal to HF's 4-bit NLL at
// every position.
func TestHFReleaseConversion(t *testing.T) {
	root := filepath.Join("..", "..", "testdata", "hfconv")
	data, err := os.ReadFile(filepath.Join(root, "golden.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g hfconvGolden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"bf16", "fp8"} {
		t.Run(format, func(t *testing.T) {
			want, ok := g.Formats[format]
			if !ok || len(want.PerPos) != len(g.IDs)-1 {
				t.Fatalf("golden lacks %s", format)
			}
			ctx := context.Background()
			dir := convertModel(t, filepath.Join(root, format))
			m, err := runtime.Open(ctx, dir, runtime.Options{Backend: cpu.New()})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, err := m.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Perplexity(ctx, g.IDs, true)
			if err != nil {
				t.Fatal(err)
			}
			gap := math.Abs(want.NLLQ4 - want.NLLOrig)
			t.Logf("%s: mean NLL fmoe %.6f, HF 4-bit %.6f, HF original %.6f (gap %.4f)", format, res.MeanNLL, want.NLLQ4, want.NLLOrig, gap)
			if d := math.Abs(res.MeanNLL - want.NLLOrig); d > gap*1.05+1e-4 {
				t.Errorf("fmoe's NLL is %.5f from HF's on the originals, more than the 4-bit gap %.5f", d, gap)
			}
			for i, w := range want.PerPos {
				if d := math.Abs(res.NLL[i] - w); d > 1e-3*math.Max(1, math.Abs(w)) {
					t.Errorf("position %d: NLL %.6f, HF on the same 4-bit weights %.6f", i, res.NLL[i], w)
				}
			}
		})
	}
}
