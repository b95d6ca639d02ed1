package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
	"github.com/fmoe/fmoe/runtime/testmodel"
)

func tinyModel(t *testing.T, o testmodel.Options) string {
	t.Helper()
	dir := t.TempDir()
	if err := testmodel.Write(dir, testmodel.Tiny(), o); err != nil {
		t.Fatal(err)
	}
	return dir
}

func open(t *testing.T, dir string, o runtime.Options) *runtime.Model {
	t.Helper()
	if o.Backend == nil {
		o.Backend = testBackend(t)
	}
	m, err := runtime.Open(context.Background(), dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// relErr is max|a-b| / max|b| over one row.
// relErr is max|a-b| / max|b|. It returns +Inf when the lengths differ or
// the ratio is not finite (NaN logits, an all-zero reference), so that a
// caller's "relErr(...) > tol" check cannot pass on NaN.
func relErr(a, b []float32) float64 {
	if len(a) != len(b) || len(b) == 0 {
		return math.Inf(1)
	}
	var num, den float64
	for i := range b {
		num = math.Max(num, math.Abs(float64(a[i])-float64(b[i])))
		den = math.Max(den, math.Abs(float64(b[i])))
	}
	if r := num / den; !math.IsNaN(r) && !math.IsInf(r, 0) {
		return r
	}
	return math.Inf(1)
}

func forwardAll(t *testing.T, m *runtime.Model, ids []int32) []float32 {
	t.Helper()
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.Forward(context.Background(), ids, true)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var prompt = []int32{1, 17, 42, 5, 88, 3, 61, 9, 27, 70, 11}

// The same tokens give the same logits whatever the batching: one-shot
// prefill, small batches, prefill then token-by-token decode.
func TestBatchingConsistency(t *testing.T) {
	for _, bits := range []int{0, 4, 8} {
		dir := tinyModel(t, testmodel.Options{Seed: 1, Bits: bits})
		V := testmodel.Tiny().VocabSize
		ref := forwardAll(t, open(t, dir, runtime.Options{}), prompt)
		for _, batch := range []int{1, 3, 64} {
			got := forwardAll(t, open(t, dir, runtime.Options{Batch: batch}), prompt)
			for p := range prompt {
				if e := relErr(got[p*V:(p+1)*V], ref[p*V:(p+1)*V]); e > 1e-4 {
					t.Fatalf("bits %d batch %d position %d: relative error %.3g", bits, batch, p, e)
				}
			}
		}
		// Prefill 6, then decode one at a time, last logits only.
		m := open(t, dir, runtime.Options{})
		s, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		last, err := s.Forward(context.Background(), prompt[:6], false)
		if err != nil {
			t.Fatal(err)
		}
		for p := 6; ; p++ {
			if e := relErr(last, ref[(p-1)*V:p*V]); e > 1e-4 {
				t.Fatalf("bits %d: decode position %d: relative error %.3g", bits, p-1, e)
			}
			if p == len(prompt) {
				break
			}
			if last, err = s.Forward(context.Background(), prompt[p:p+1], false); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Per-layer and per-expert files hold the same experts: same logits. Direct
// I/O, where supported, reads the same bytes.
func TestExpertLayouts(t *testing.T) {
	V := testmodel.Tiny().VocabSize
	ref := forwardAll(t, open(t, tinyModel(t, testmodel.Options{Seed: 2, Bits: 4}), runtime.Options{}), prompt)
	layerDir := tinyModel(t, testmodel.Options{Seed: 2, Bits: 4, Layout: formats.PackLayoutLayer})
	got := forwardAll(t, open(t, layerDir, runtime.Options{}), prompt)
	if e := relErr(got, ref); e != 0 {
		t.Fatalf("per-layer files: relative error %.3g, want identical", e)
	}
	if _, err := runtime.OpenExperts(filepath.Join(layerDir, "packed_experts"), testmodel.Tiny(), runtime.FileExpertsOptions{DirectIO: true}); err == nil {
		got := forwardAll(t, open(t, layerDir, runtime.Options{DirectIO: true}), prompt)
		if e := relErr(got, ref); e != 0 {
			t.Fatalf("direct I/O: relative error %.3g, want identical", e)
		}
	}
	_ = V
}

func TestGenerateGreedyAndStop(t *testing.T) {
	dir := tinyModel(t, testmodel.Options{Seed: 3, Bits: 4})
	m := open(t, dir, runtime.Options{})
	run := func(stop map[int32]bool, n int) []int32 {
		s, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out []int32
		_, err = s.Generate(context.Background(), prompt, n, runtime.NewSampler(runtime.SamplerOptions{}), stop,
			func(id int32) error { out = append(out, id); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a := run(nil, 6)
	if len(a) != 6 {
		t.Fatalf("generated %d tokens, want 6", len(a))
	}
	// Greedy continuation equals argmax of a one-shot prefill of prompt+generated.
	V := m.Config.VocabSize
	all := forwardAll(t, m, append(append([]int32{}, prompt...), a[:5]...))
	for i, id := range a {
		p := len(prompt) - 1 + i
		if want := runtime.Argmax(all[p*V:(p+1)*V], 0); int32(want) != id {
			t.Fatalf("token %d: generated %d, one-shot argmax %d", i, id, want)
		}
	}
	b := run(map[int32]bool{a[2]: true}, 6)
	if len(b) != 3 {
		t.Fatalf("stop token %d: generated %v", a[2], b)
	}
}

// argmaxBackend is the CPU backend with an Argmaxer that records its calls.
type argmaxBackend struct {
	runtime.Backend
	calls []int // n of each call
}

func (b *argmaxBackend) Argmax(x runtime.Tensor, n int) (int, error) {
	b.calls = append(b.calls, n)
	v := make([]float32, x.Rows()*x.Cols())
	if err := b.Download(x, v); err != nil {
		return 0, err
	}
	return runtime.Argmax(v[:x.Cols()], n), nil
}

// Greedy generation asks an Argmaxer backend for each token (the prompt's
// next token and every decode step, with the sampler's vocabulary limit) and
// generates what the plain path generates; sampling never calls it.
func TestGenerateUsesArgmaxer(t *testing.T) {
	dir := tinyModel(t, testmodel.Options{Seed: 3, Bits: 4})
	gen := func(be runtime.Backend, o runtime.SamplerOptions) []int32 {
		m := open(t, dir, runtime.Options{Backend: be})
		s, err := m.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out []int32
		if _, err := s.Generate(context.Background(), prompt, 5, runtime.NewSampler(o), nil,
			func(id int32) error { out = append(out, id); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	V := testmodel.Tiny().VocabSize
	for _, limit := range []int{0, V - 7} {
		o := runtime.SamplerOptions{VocabLimit: limit}
		ab := &argmaxBackend{Backend: cpu.New()}
		got, want := gen(ab, o), gen(cpu.New(), o)
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: with Argmaxer %v, without %v", limit, got, want)
		}
		wantN := limit
		if wantN == 0 {
			wantN = V
		}
		if len(ab.calls) != 5 || ab.calls[0] != wantN {
			t.Fatalf("limit %d: Argmax calls %v, want 5 of n=%d", limit, ab.calls, wantN)
		}
	}
	ab := &argmaxBackend{Backend: cpu.New()}
	gen(ab, runtime.SamplerOptions{Temperature: 0.8, Seed: 1})
	if len(ab.calls) != 0 {
		t.Fatalf("sampling called Argmax %d times", len(ab.calls))
	}
}

// batchBackend asks for prefill steps of n tokens (runtime.PrefillBatcher)
// and records the most rows a MatMul saw.
type batchBackend struct {
	runtime.Backend
	n, maxRows int
}

func (b *batchBackend) PrefillBatch() int { return b.n }

func (b *batchBackend) MatMul(dst runtime.Tensor, w runtime.Weight, x runtime.Tensor) error {
	b.maxRows = max(b.maxRows, x.Rows())
	return b.Backend.MatMul(dst, w, x)
}

// TestPrefillBatcher: a backend's PrefillBatch sets the step size when
// Options.Batch is 0 (Options.Batch wins otherwise; 32 without it), and the
// prompt runs in steps of that many tokens with the same logits.
func TestPrefillBatcher(t *testing.T) {
	dir := tinyModel(t, testmodel.Options{Seed: 1, Bits: 4})
	V := testmodel.Tiny().VocabSize
	ref := forwardAll(t, open(t, dir, runtime.Options{Backend: cpu.New(), Batch: 1}), prompt)
	for _, c := range []struct{ ask, opt, want int }{{4, 0, 4}, {4, 2, 2}, {0, 0, 32}} {
		bb := &batchBackend{Backend: cpu.New(), n: c.ask}
		m := open(t, dir, runtime.Options{Backend: bb, Batch: c.opt})
		if m.Batch() != c.want {
			t.Fatalf("PrefillBatch %d, Options.Batch %d: Batch() = %d, want %d", c.ask, c.opt, m.Batch(), c.want)
		}
		got := forwardAll(t, m, prompt)
		if want := min(c.want, len(prompt)); bb.maxRows != want {
			t.Fatalf("PrefillBatch %d, Options.Batch %d: steps of up to %d rows, want %d", c.ask, c.opt, bb.maxRows, want)
		}
		for p := range prompt {
			if e := relErr(got[p*V:(p+1)*V], ref[p*V:(p+1)*V]); e > 1e-4 {
				t.Fatalf("PrefillBatch %d: position %d: relative error %.3g", c.ask, p, e)
			}
		}
	}
}

func TestArgmaxNaN(t *testing.T) {
	nan := float32(math.NaN())
	for _, c := range []struct {
		v    []float32
		want int
	}{
		{[]float32{nan, 1, 3, 3}, 2},
		{[]float32{nan, nan}, 0},
		{[]float32{-1, nan, -0.5}, 2},
	} {
		if got := runtime.Argmax(c.v, 0); got != c.want {
			t.Errorf("Argmax(%v) = %d, want %d", c.v, got, c.want)
		}
	}
}

func TestSamplerMasksPadding(t *testing.T) {
	logits := []float32{0, 1, 2, 50, 60}
	if got := runtime.NewSampler(runtime.SamplerOptions{VocabLimit: 3}).Sample(logits); got != 2 {
		t.Fatalf("greedy with limit 3 sampled %d", got)
	}
	s := runtime.NewSampler(runtime.SamplerOptions{Temperature: 1.5, TopP: 0.99, Seed: 9, VocabLimit: 4})
	seen := map[int32]bool{}
	for i := 0; i < 200; i++ {
		id := s.Sample(logits)
		if id >= 4 {
			t.Fatalf("sampled padding id %d", id)
		}
		seen[id] = true
	}
	if !seen[3] {
		t.Fatalf("never sampled the most likely allowed id: %v", seen)
	}
	// Same seed, same sequence.
	x, y := runtime.NewSampler(runtime.SamplerOptions{Temperature: 1, Seed: 4}), runtime.NewSampler(runtime.SamplerOptions{Temperature: 1, Seed: 4})
	flat := []float32{1, 1, 1, 1, 1, 1}
	for i := 0; i < 50; i++ {
		if x.Sample(flat) != y.Sample(flat) {
			t.Fatal("same seed gave different samples")
		}
	}
}

func TestContextLimit(t *testing.T) {
	m := open(t, tinyModel(t, testmodel.Options{Seed: 4, Bits: 4}), runtime.Options{MaxContext: 8})
	s, err := m.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Forward(context.Background(), prompt, false); !errors.Is(err, runtime.ErrContext) {
		t.Fatalf("11 tokens into an 8-token context: %v, want ErrContext", err)
	}
	if _, err := s.Forward(context.Background(), []int32{1, 500}, false); err == nil {
		t.Fatal("token id beyond the vocabulary accepted")
	}
}

func TestBadModelFiles(t *testing.T) {
	edit := func(path string, fn func(b []byte) []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, path)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, fn(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	manifest := func(fn func(m *formats.Manifest)) func(t *testing.T, dir string) {
		return edit("model_weights.json", func(b []byte) []byte {
			m, err := formats.ParseManifest(b)
			if err != nil {
				t.Fatal(err)
			}
			fn(m)
			return mustJSON(t, m)
		})
	}
	cases := []struct {
		name string
		mess func(t *testing.T, dir string)
		want error
		opts runtime.Options
	}{
		{"missing manifest", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "model_weights.json")) }, runtime.ErrModel, runtime.Options{}},
		{"missing weights", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "model_weights.bin")) }, runtime.ErrModel, runtime.Options{}},
		{"corrupt manifest", edit("model_weights.json", func(b []byte) []byte { return b[:len(b)/2] }), runtime.ErrModel, runtime.Options{}},
		{"truncated weights", edit("model_weights.bin", func(b []byte) []byte { return b[:len(b)-100] }), runtime.ErrModel, runtime.Options{}},
		{"missing tensor", manifest(func(m *formats.Manifest) {
			delete(m.Tensors, "model.layers.2.linear_attn.in_proj_z.weight")
			m.NumTensors--
		}), runtime.ErrModel, runtime.Options{}},
		{"config disagrees with tensors", manifest(func(m *formats.Manifest) { m.Config["hidden_size"] = 128 }), runtime.ErrModel, runtime.Options{}},
		{"bad config", manifest(func(m *formats.Manifest) { m.Config["num_experts_per_tok"] = 0 }), runtime.ErrModel, runtime.Options{}},
		{"missing experts", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "packed_experts", "layer_01_expert_0003.bin"))
		}, runtime.ErrExperts, runtime.Options{}},
		{"expert file wrong size", edit("packed_experts/layer_02_expert_0005.bin", func(b []byte) []byte { return b[:len(b)-1] }), runtime.ErrExperts, runtime.Options{}},
		{"expert layout disagrees", edit("packed_experts/layout.json", func(b []byte) []byte {
			var p formats.PackLayout
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatal(err)
			}
			p.NumExperts = 16
			return mustJSON(t, p)
		}), runtime.ErrExperts, runtime.Options{}},
		{"no 2-bit experts", func(t *testing.T, dir string) {}, runtime.ErrExperts, runtime.Options{TwoBit: true}},
		{"too many experts per token", func(t *testing.T, dir string) {}, runtime.ErrModel, runtime.Options{ExpertsPerToken: 9}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := tinyModel(t, testmodel.Options{Seed: 5, Bits: 4})
			c.mess(t, dir)
			c.opts.Backend = cpu.New()
			m, err := runtime.Open(context.Background(), dir, c.opts)
			if err == nil {
				m.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
		})
	}
}
