// Package testmodel writes small random Qwen3.5-MoE model directories in the
// layout `fmoe run` reads (model_weights.bin/.json, packed_experts with
// layout.json), for engine tests and benchmarks. Weights are random, so the
// output text is meaningless; shapes and file formats are exact.
package testmodel

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/quant"
)

// Tiny returns a small config with both layer kinds (layer 3 is full
// attention), 8 experts and top-2, whose vocabulary covers WriteTokenizer's.
func Tiny() *formats.Config {
	return &formats.Config{
		ModelType: "qwen3_5_moe_text", HiddenSize: 64, NumHiddenLayers: 4, NumAttentionHeads: 4,
		NumKeyValueHeads: 2, HeadDim: 16, VocabSize: 128, RMSNormEps: 1e-6, NumExperts: 8,
		NumExpertsPerTok: 2, MoEIntermediateSize: 32, SharedExpertIntermediateSize: 32,
		FullAttentionInterval: 4, LayerTypes: []string{"linear_attention", "linear_attention", "linear_attention", "full_attention"},
		LinearNumKeyHeads: 2, LinearNumValueHeads: 4, LinearKeyHeadDim: 16, LinearValueHeadDim: 16,
		LinearConvKernelDim: 4, RopeTheta: 1e7, PartialRotaryFactor: 0.25, EOSTokenIDs: []int{EndOfText},
		Quantization: &formats.QuantConfig{GroupSize: 32, Bits: 4},
	}
}

// Options select what Write produces.
type Options struct {
	Seed       uint64
	Bits       int    // non-expert matrices: 0 = dense BF16, else 4 or 8
	ExpertBits int    // 2, 4 or 8 (default 4)
	Group      int    // quantization group (default 32)
	Layout     string // formats.PackLayoutExpert (default) or formats.PackLayoutLayer
	ExpertsDir string // default "packed_experts"
}

type tensor struct {
	name  string
	dtype string
	shape []int64
	data  []byte
}

// Write creates dir with a random model of config c.
func Write(dir string, c *formats.Config, o Options) error {
	if o.ExpertBits == 0 {
		o.ExpertBits = 4
	}
	if o.Group == 0 {
		o.Group = 32
	}
	if o.Layout == "" {
		o.Layout = formats.PackLayoutExpert
	}
	if o.ExpertsDir == "" {
		o.ExpertsDir = "packed_experts"
	}
	r := rand.New(rand.NewPCG(o.Seed, 7))
	var ts []tensor
	randv := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32((r.Float64()*2 - 1) * scale)
		}
		return v
	}
	bf16 := func(name string, v []float32, shape ...int64) {
		b := make([]byte, 2*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint16(b[2*i:], quant.F32ToBF16(x))
		}
		ts = append(ts, tensor{name, "BF16", shape, b})
	}
	f32 := func(name string, v []float32, shape ...int64) {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		ts = append(ts, tensor{name, "F32", shape, b})
	}
	var err error
	mat := func(base string, out, in int, bits int) {
		scale := 1 / math.Sqrt(float64(in))
		v := randv(out*in, 2*scale)
		if bits == 0 {
			bf16(base+".weight", v, int64(out), int64(in))
			return
		}
		q, e := quant.Quantize(v, out, in, bits, o.Group)
		if e != nil && err == nil {
			err = fmt.Errorf("testmodel: %s: %w", base, e)
			return
		}
		if e != nil {
			return
		}
		ts = append(ts, tensor{base + ".weight", "U32", []int64{int64(out), int64(in * bits / 32)}, quant.U8sFromU32(q.W)})
		ts = append(ts, tensor{base + ".scales", "BF16", []int64{int64(out), int64(in / o.Group)}, u16bytes(q.Scales)})
		ts = append(ts, tensor{base + ".biases", "BF16", []int64{int64(out), int64(in / o.Group)}, u16bytes(q.Biases)})
	}
	norm := func(name string, n int) {
		v := randv(n, 0.2)
		for i := range v {
			v[i] += 1
		}
		bf16(name, v, int64(n))
	}
	H := c.HiddenSize
	mat("model.embed_tokens", c.VocabSize, H, o.Bits)
	mat("lm_head", c.VocabSize, H, o.Bits)
	norm("model.norm.weight", H)
	for l := 0; l < c.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		norm(p+"input_layernorm.weight", H)
		norm(p+"post_attention_layernorm.weight", H)
		if c.IsFullAttention(l) {
			mat(p+"self_attn.q_proj", c.NumAttentionHeads*2*c.HeadDim, H, o.Bits)
			mat(p+"self_attn.k_proj", c.NumKeyValueHeads*c.HeadDim, H, o.Bits)
			mat(p+"self_attn.v_proj", c.NumKeyValueHeads*c.HeadDim, H, o.Bits)
			mat(p+"self_attn.o_proj", H, c.NumAttentionHeads*c.HeadDim, o.Bits)
			norm(p+"self_attn.q_norm.weight", c.HeadDim)
			norm(p+"self_attn.k_norm.weight", c.HeadDim)
		} else {
			vd := c.LinearValueDim()
			mat(p+"linear_attn.in_proj_qkv", c.LinearConvDim(), H, o.Bits)
			mat(p+"linear_attn.in_proj_z", vd, H, o.Bits)
			mat(p+"linear_attn.in_proj_b", c.LinearNumValueHeads, H, o.Bits)
			mat(p+"linear_attn.in_proj_a", c.LinearNumValueHeads, H, o.Bits)
			mat(p+"linear_attn.out_proj", H, vd, o.Bits)
			bf16(p+"linear_attn.conv1d.weight", randv(c.LinearConvDim()*c.LinearConvKernelDim, 0.5),
				int64(c.LinearConvDim()), int64(c.LinearConvKernelDim), 1)
			bf16(p+"linear_attn.dt_bias", randv(c.LinearNumValueHeads, 1), int64(c.LinearNumValueHeads))
			f32(p+"linear_attn.A_log", randv(c.LinearNumValueHeads, 1), int64(c.LinearNumValueHeads))
			norm(p+"linear_attn.norm.weight", c.LinearValueHeadDim)
		}
		mat(p+"mlp.gate", c.NumExperts, H, o.Bits)
		mat(p+"mlp.shared_expert.gate_proj", c.SharedExpertIntermediateSize, H, o.Bits)
		mat(p+"mlp.shared_expert.up_proj", c.SharedExpertIntermediateSize, H, o.Bits)
		mat(p+"mlp.shared_expert.down_proj", H, c.SharedExpertIntermediateSize, o.Bits)
		mat(p+"mlp.shared_expert_gate", 1, H, o.Bits)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeWeights(dir, c, ts); err != nil {
		return err
	}
	return writeExperts(filepath.Join(dir, o.ExpertsDir), c, o, r)
}

func u16bytes(v []uint16) []byte {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], x)
	}
	return b
}

func writeWeights(dir string, c *formats.Config, ts []tensor) error {
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	man := formats.Manifest{Model: "testmodel", NumTensors: len(ts), Tensors: map[string]formats.ManifestTensor{},
		Config: formats.ManifestConfig(c)}
	var bin []byte
	for _, t := range ts {
		for len(bin)%64 != 0 {
			bin = append(bin, 0)
		}
		man.Tensors[t.name] = formats.ManifestTensor{Offset: int64(len(bin)), Size: int64(len(t.data)), Shape: t.shape, DType: t.dtype}
		bin = append(bin, t.data...)
	}
	js, err := json.MarshalIndent(man, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "model_weights.bin"), bin, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "model_weights.json"), js, 0o644)
}

func writeExperts(dir string, c *formats.Config, o Options, r *rand.Rand) error {
	el, err := formats.NewExpertLayout(c.HiddenSize, c.MoEIntermediateSize, o.ExpertBits, o.Group)
	if err != nil {
		return err
	}
	layers := make([]int, c.NumHiddenLayers)
	for i := range layers {
		layers[i] = i
	}
	pl := formats.PackLayout{Format: formats.PackFormat, Layout: o.Layout, NumLayers: c.NumHiddenLayers,
		NumExperts: c.NumExperts, Layers: layers, Expert: *el}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	I, H := c.MoEIntermediateSize, c.HiddenSize
	files := map[string][]byte{}
	for l := 0; l < c.NumHiddenLayers; l++ {
		for e := 0; e < c.NumExperts; e++ {
			var blk []byte
			for _, sh := range [][2]int{{I, H}, {I, H}, {H, I}} {
				v := make([]float32, sh[0]*sh[1])
				s := 2 / math.Sqrt(float64(sh[1]))
				for i := range v {
					v[i] = float32((r.Float64()*2 - 1) * s)
				}
				q, err := quant.Quantize(v, sh[0], sh[1], o.ExpertBits, o.Group)
				if err != nil {
					return err
				}
				blk = append(blk, quant.U8sFromU32(q.W)...)
				blk = append(blk, u16bytes(q.Scales)...)
				blk = append(blk, u16bytes(q.Biases)...)
			}
			if int64(len(blk)) != el.Size {
				return fmt.Errorf("testmodel: expert block %d bytes, layout says %d", len(blk), el.Size)
			}
			name, _ := pl.ExpertFile(l, e)
			files[name] = append(files[name], blk...)
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	js, err := json.MarshalIndent(pl, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "layout.json"), js, 0o644)
}
