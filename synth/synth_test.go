package synth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/quant"
)

func tiny(t testing.TB) Options {
	o, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func synthTo(t testing.TB, o Options, workers int) string {
	t.Helper()
	p, err := NewPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var sum progress.Sum
	if err := Write(context.Background(), dir, p, workers, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Load() != p.Bytes() {
		t.Errorf("progress counted %d bytes, shards hold %d", sum.Load(), p.Bytes())
	}
	return dir
}

// expected lists every tensor a Qwen3.5-MoE MLX checkpoint must have for
// config c with the given default and gate quantization: name → shape and
// dtype. It is written from reference §2.2, independently of Modules.
func expected(c *formats.Config, bits, gateBits, group int) map[string]formats.TensorSpec {
	want := map[string]formats.TensorSpec{}
	q := func(name string, b int, shape ...int64) {
		in := shape[len(shape)-1]
		lead := shape[:len(shape)-1]
		w := append(slices.Clone(lead), in*int64(b)/32)
		s := append(slices.Clone(lead), in/int64(group))
		want[name+".weight"] = formats.TensorSpec{Name: name + ".weight", DType: formats.U32, Shape: w}
		want[name+".scales"] = formats.TensorSpec{Name: name + ".scales", DType: formats.BF16, Shape: s}
		want[name+".biases"] = formats.TensorSpec{Name: name + ".biases", DType: formats.BF16, Shape: s}
	}
	d := func(name string, dt formats.DType, shape ...int64) {
		want[name] = formats.TensorSpec{Name: name, DType: dt, Shape: shape}
	}
	H, V := int64(c.HiddenSize), int64(c.VocabSize)
	q("language_model.model.embed_tokens", bits, V, H)
	q("language_model.lm_head", bits, V, H)
	d("language_model.model.norm.weight", formats.BF16, H)
	for l := 0; l < c.NumHiddenLayers; l++ {
		p := fmt.Sprintf("language_model.model.layers.%d.", l)
		d(p+"input_layernorm.weight", formats.BF16, H)
		d(p+"post_attention_layernorm.weight", formats.BF16, H)
		if (l+1)%4 == 0 {
			hd := int64(c.HeadDim)
			q(p+"self_attn.q_proj", bits, 2*int64(c.NumAttentionHeads)*hd, H)
			q(p+"self_attn.k_proj", bits, int64(c.NumKeyValueHeads)*hd, H)
			q(p+"self_attn.v_proj", bits, int64(c.NumKeyValueHeads)*hd, H)
			q(p+"self_attn.o_proj", bits, H, int64(c.NumAttentionHeads)*hd)
			d(p+"self_attn.q_norm.weight", formats.BF16, hd)
			d(p+"self_attn.k_norm.weight", formats.BF16, hd)
		} else {
			conv := int64(c.LinearConvDim())
			hv := int64(c.LinearNumValueHeads)
			q(p+"linear_attn.in_proj_qkv", bits, conv, H)
			q(p+"linear_attn.in_proj_z", bits, int64(c.LinearValueDim()), H)
			q(p+"linear_attn.in_proj_b", bits, hv, H)
			q(p+"linear_attn.in_proj_a", bits, hv, H)
			q(p+"linear_attn.out_proj", bits, H, int64(c.LinearValueDim()))
			d(p+"linear_attn.conv1d.weight", formats.BF16, conv, int64(c.LinearConvKernelDim), 1)
			d(p+"linear_attn.dt_bias", formats.BF16, hv)
			d(p+"linear_attn.A_log", formats.F32, hv)
			d(p+"linear_attn.norm.weight", formats.BF16, int64(c.LinearValueHeadDim))
		}
		E, I, S := int64(c.NumExperts), int64(c.MoEIntermediateSize), int64(c.SharedExpertIntermediateSize)
		q(p+"mlp.gate", gateBits, E, H)
		q(p+"mlp.shared_expert_gate", gateBits, 1, H)
		q(p+"mlp.shared_expert.gate_proj", bits, S, H)
		q(p+"mlp.shared_expert.up_proj", bits, S, H)
		q(p+"mlp.shared_expert.down_proj", bits, H, S)
		q(p+"mlp.switch_mlp.gate_proj", bits, E, I, H)
		q(p+"mlp.switch_mlp.up_proj", bits, E, I, H)
		q(p+"mlp.switch_mlp.down_proj", bits, E, H, I)
	}
	return want
}

func TestSynthTiny(t *testing.T) {
	o := tiny(t)
	dir := synthTo(t, o, 0)
	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	c := ck.Config
	if c.HiddenSize != o.Hidden || c.NumHiddenLayers != 4 || c.NumFullAttentionLayers() != 1 || !c.IsFullAttention(3) {
		t.Fatalf("config %+v", c)
	}
	if len(ck.Files) != o.Shards {
		t.Errorf("%d shards, want %d", len(ck.Files), o.Shards)
	}
	want := expected(c, o.Bits, o.GateBits, o.GroupSize)
	if len(ck.Tensors) != len(want) {
		t.Errorf("%d tensors, want %d", len(ck.Tensors), len(want))
	}
	for name, w := range want {
		r, ok := ck.Tensors[name]
		if !ok {
			t.Errorf("missing %s", name)
			continue
		}
		if r.Info.DType != w.DType || !slices.Equal(r.Info.Shape, w.Shape) {
			t.Errorf("%s: %s %v, want %s %v", name, r.Info.DType, r.Info.Shape, w.DType, w.Shape)
		}
	}
	// Router overrides are recorded in config.json and agree with shapes.
	gate := "language_model.model.layers.2.mlp.gate"
	spec, ok, err := ck.Quant(gate, o.Hidden)
	if err != nil || !ok || spec.Bits != o.GateBits {
		t.Errorf("gate quant %v %v %v", spec, ok, err)
	}
	if s, _ := c.Quantization.Lookup(gate); s.Bits != o.GateBits {
		t.Errorf("config override for %s: %v", gate, s)
	}
	// Quantized weights dequantize to small centred values.
	for _, mod := range []string{"language_model.model.embed_tokens", "language_model.model.layers.0.mlp.switch_mlp.down_proj", "language_model.model.layers.3.self_attn.q_proj"} {
		m := loadMatrix(t, ck, mod)
		var sum, sq float64
		row := make([]float32, m.Cols)
		for r := 0; r < m.Rows; r += max(1, m.Rows/64) {
			m.DequantizeRow(row, r)
			for _, v := range row {
				sum += float64(v)
				sq += float64(v) * float64(v)
			}
		}
		n := float64(m.Cols * ((m.Rows + max(1, m.Rows/64) - 1) / max(1, m.Rows/64)))
		mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
		if math.Abs(mean) > 0.005 || std < 0.01 || std > 0.04 {
			t.Errorf("%s: mean %g std %g, want ≈0 and ≈0.02", mod, mean, std)
		}
	}
	// Norms are MLX-style (already +1): near 1. A_log in [0, log 16].
	norm := bf16s(t, ck, "language_model.model.layers.1.input_layernorm.weight")
	for _, v := range norm {
		if v < 0.4 || v > 1.6 {
			t.Fatalf("norm weight %g not near 1", v)
		}
	}
	alog, _, _ := ck.ReadTensor("language_model.model.layers.0.linear_attn.A_log")
	for _, v := range quant.F32s(alog) {
		if v < 0 || v > float32(math.Log(16))+1e-6 {
			t.Fatalf("A_log %g out of range", v)
		}
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "model.safetensors.index.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func loadMatrix(t *testing.T, ck *checkpoint.Checkpoint, mod string) *quant.Matrix {
	t.Helper()
	w, rw, err := ck.ReadTensor(mod + ".weight")
	if err != nil {
		t.Fatal(err)
	}
	s, rs, _ := ck.ReadTensor(mod + ".scales")
	b, _, _ := ck.ReadTensor(mod + ".biases")
	sh := rw.Info.Shape
	rows := 1
	for _, d := range sh[:len(sh)-1] {
		rows *= int(d)
	}
	spec, err := formats.InferQuant(rw.Info.Shape, rs.Info.Shape, 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	cols := int(sh[len(sh)-1]) * 32 / spec.Bits
	m, err := quant.FromBytes(spec.Bits, spec.GroupSize, rows, cols, w, s, b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func bf16s(t *testing.T, ck *checkpoint.Checkpoint, name string) []float32 {
	b, _, err := ck.ReadTensor(name)
	if err != nil {
		t.Fatal(err)
	}
	var out []float32
	for _, u := range quant.U16s(b) {
		out = append(out, quant.BF16ToF32(u))
	}
	return out
}

func TestSynthDeterministic(t *testing.T) {
	o := tiny(t)
	o.Shards = 3
	o.Seed = 7
	a := synthTo(t, o, 1)
	b := synthTo(t, o, 4)
	for _, f := range []string{"model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors", "config.json", "model.safetensors.index.json"} {
		x, _ := os.ReadFile(filepath.Join(a, f))
		y, _ := os.ReadFile(filepath.Join(b, f))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s differs between 1 and 4 workers", f)
		}
	}
	o.Seed = 8
	c := synthTo(t, o, 2)
	x, _ := os.ReadFile(filepath.Join(a, "model-00002-of-00003.safetensors"))
	y, _ := os.ReadFile(filepath.Join(c, "model-00002-of-00003.safetensors"))
	if bytes.Equal(x, y) {
		t.Errorf("seed does not change the weights")
	}
}

func TestPlan397BShape(t *testing.T) {
	o, err := Preset("397b-shape")
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := o.ConfigJSON()
	c, err := formats.ParseConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := expected(c, 4, 4, 64)
	got := 0
	nonExpert := 0
	for _, s := range p.Shards {
		if s.Size > maxShardBytes {
			t.Errorf("shard %s is %d bytes", s.Name, s.Size)
		}
		for name, ti := range s.Tensors {
			got++
			w, ok := want[name]
			if !ok || w.DType != ti.DType || !slices.Equal(w.Shape, ti.Shape) {
				t.Errorf("%s: %s %v unexpected", name, ti.DType, ti.Shape)
			}
			if !bytes.Contains([]byte(name), []byte(".switch_mlp.")) {
				nonExpert++
			}
		}
	}
	// Reference §2.2: 45×36 + 15×31 + 7 = 2092 non-expert tensors.
	if got != len(want) || nonExpert != 2092 {
		t.Errorf("%d tensors (%d non-expert), want %d (2092)", got, nonExpert, len(want))
	}
	experts, _ := formats.NewExpertLayout(4096, 1024, 4, 64)
	sw := p.Shards[0].Tensors
	for _, s := range p.Shards {
		if ti, ok := s.Tensors["language_model.model.layers.0.mlp.switch_mlp.down_proj.weight"]; ok {
			sw = s.Tensors
			if ti.Size != 512*4096*128*4 {
				t.Errorf("down_proj.weight %d bytes", ti.Size)
			}
		}
	}
	var perExpert int64
	for _, comp := range formats.ExpertComponentNames {
		perExpert += sw["language_model.model.layers.0.mlp.switch_mlp."+comp].Size / 512
	}
	if perExpert != experts.Size {
		t.Errorf("per-expert bytes %d, layout says %d", perExpert, experts.Size)
	}
}

func TestOptionsErrors(t *testing.T) {
	mut := map[string]func(o *Options){
		"bits":       func(o *Options) { o.Bits = 3 },
		"gate bits":  func(o *Options) { o.GateBits = 5 },
		"vocab":      func(o *Options) { o.Vocab = 1000 },
		"group":      func(o *Options) { o.Hidden = 96 },
		"top-k":      func(o *Options) { o.TopK = 99 },
		"kv heads":   func(o *Options) { o.KVHeads = 3 },
		"layers":     func(o *Options) { o.Layers = 0 },
		"shards":     func(o *Options) { o.Shards = 100000 },
		"neg shards": func(o *Options) { o.Shards = -1 },
	}
	for name, f := range mut {
		o := tiny(t)
		f(&o)
		if _, err := NewPlan(o); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := Preset("huge"); !errors.Is(err, ErrOptions) {
		t.Errorf("unknown preset: %v", err)
	}
}

func TestWriteCanceled(t *testing.T) {
	p, err := NewPlan(tiny(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if err := Write(ctx, dir, p, 2, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("canceled write left %d entries", len(ents))
	}
}

func BenchmarkSynthTiny(b *testing.B) {
	p, err := NewPlan(tiny(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(p.Bytes())
	for b.Loop() {
		if err := Write(context.Background(), b.TempDir(), p, 0, nil); err != nil {
			b.Fatal(err)
		}
	}
}
