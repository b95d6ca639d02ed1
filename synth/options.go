package synth

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fmoe/fmoe/formats"
)

// ErrOptions reports options that cannot make a valid checkpoint.
var ErrOptions = errors.New("synth: bad options")

// MinVocab is the smallest vocab_size that covers every id of the bundled
// Qwen3 tokenizer (max id 151668).
const MinVocab = 151669

// Options are the dimensions and knobs of a synthetic checkpoint. Field names
// follow config.json.
type Options struct {
	Hidden, Layers, Heads, KVHeads, HeadDim, Vocab                             int
	Experts, TopK, Intermediate, SharedIntermediate                            int
	LinearKeyHeads, LinearValueHeads, LinearKeyDim, LinearValueDim, ConvKernel int
	FullAttentionInterval                                                      int
	RopeTheta, PartialRotary, RMSNormEps                                       float64
	Bits, GroupSize, GateBits                                                  int // GateBits: mlp.gate and mlp.shared_expert_gate
	Shards                                                                     int // 0: about 5 GB per shard, like mlx-lm
	Seed                                                                       uint64
	EOSTokenIDs                                                                []int
}

// Presets lists the preset names.
var Presets = []string{"tiny", "small", "397b-shape"}

// Preset returns the options of a named preset.
//
//   - tiny: hidden 128, 4 layers (3 linear + 1 full attention), 8 experts,
//     top-2, intermediate 64; about 25 MB, made in well under a second.
//   - small: hidden 1024, 8 layers, 32 experts, top-4; about 300 MB.
//   - 397b-shape: the exact Qwen3.5-397B-A17B dimensions (hidden 4096, 60
//     layers, 512 experts, vocab 248320; 4-bit gates like the mlx-community
//     snapshot). About 220 GB as is: override Layers/Experts to fit a disk.
func Preset(name string) (Options, error) {
	qwen3EOS := []int{151645, 151643} // <|im_end|>, <|endoftext|> of the bundled tokenizer
	switch name {
	case "tiny":
		return Options{Hidden: 128, Layers: 4, Heads: 4, KVHeads: 2, HeadDim: 32, Vocab: 151936,
			Experts: 8, TopK: 2, Intermediate: 64, SharedIntermediate: 64,
			LinearKeyHeads: 2, LinearValueHeads: 4, LinearKeyDim: 32, LinearValueDim: 32, ConvKernel: 4,
			FullAttentionInterval: 4, RopeTheta: 1e7, PartialRotary: 0.25, RMSNormEps: 1e-6,
			Bits: 4, GroupSize: 64, GateBits: 8, Shards: 2, Seed: 1, EOSTokenIDs: qwen3EOS}, nil
	case "small":
		return Options{Hidden: 1024, Layers: 8, Heads: 8, KVHeads: 2, HeadDim: 128, Vocab: 151936,
			Experts: 32, TopK: 4, Intermediate: 256, SharedIntermediate: 256,
			LinearKeyHeads: 4, LinearValueHeads: 8, LinearKeyDim: 128, LinearValueDim: 128, ConvKernel: 4,
			FullAttentionInterval: 4, RopeTheta: 1e7, PartialRotary: 0.25, RMSNormEps: 1e-6,
			Bits: 4, GroupSize: 64, GateBits: 8, Shards: 3, Seed: 1, EOSTokenIDs: qwen3EOS}, nil
	case "397b-shape":
		return Options{Hidden: 4096, Layers: 60, Heads: 32, KVHeads: 2, HeadDim: 256, Vocab: 248320,
			Experts: 512, TopK: 10, Intermediate: 1024, SharedIntermediate: 1024,
			LinearKeyHeads: 16, LinearValueHeads: 64, LinearKeyDim: 128, LinearValueDim: 128, ConvKernel: 4,
			FullAttentionInterval: 4, RopeTheta: 1e7, PartialRotary: 0.25, RMSNormEps: 1e-6,
			Bits: 4, GroupSize: 64, GateBits: 4, Shards: 0, Seed: 1, EOSTokenIDs: qwen3EOS}, nil
	}
	return Options{}, fmt.Errorf("%w: unknown preset %q (want one of %v)", ErrOptions, name, Presets)
}

// LayerTypes returns the layer schedule: full attention iff
// (i+1) % FullAttentionInterval == 0.
func (o *Options) LayerTypes() []string {
	t := make([]string, o.Layers)
	for i := range t {
		t[i] = formats.LinearAttention
		if o.FullAttentionInterval > 0 && (i+1)%o.FullAttentionInterval == 0 {
			t[i] = formats.FullAttention
		}
	}
	return t
}

// gateModules are the modules quantized at GateBits (MLX records them as
// per-module overrides when GateBits differs from Bits).
func (o *Options) gateModules() []string {
	var out []string
	for l := 0; l < o.Layers; l++ {
		p := fmt.Sprintf("language_model.model.layers.%d.mlp.", l)
		out = append(out, p+"gate", p+"shared_expert_gate")
	}
	return out
}

// quantFor returns the quantization of a module with input dimension in, or
// nil when MLX would leave it unquantized (in not divisible by the group).
func (o *Options) quantFor(module string, in int, gate bool) *formats.QuantSpec {
	bits := o.Bits
	if gate {
		bits = o.GateBits
	}
	if in%o.GroupSize != 0 || o.GroupSize%(32/bits) != 0 {
		return nil
	}
	return &formats.QuantSpec{GroupSize: o.GroupSize, Bits: bits}
}

// ConfigJSON returns config.json as mlx-lm/mlx-vlm save it for a
// Qwen3.5-MoE model: sorted keys, the language-model fields nested under
// text_config, and the quantization block duplicated as
// quantization_config.
func (o *Options) ConfigJSON() ([]byte, error) {
	rot := int(float64(o.HeadDim) * o.PartialRotary)
	n := rot / 2
	a := (n + 2) / 3
	mrope := []int{a, a, max(n-2*a, 0)}
	text := map[string]any{
		"model_type":                      "qwen3_5_moe_text",
		"hidden_size":                     o.Hidden,
		"num_hidden_layers":               o.Layers,
		"num_attention_heads":             o.Heads,
		"num_key_value_heads":             o.KVHeads,
		"head_dim":                        o.HeadDim,
		"vocab_size":                      o.Vocab,
		"rms_norm_eps":                    o.RMSNormEps,
		"hidden_act":                      "silu",
		"num_experts":                     o.Experts,
		"num_experts_per_tok":             o.TopK,
		"moe_intermediate_size":           o.Intermediate,
		"shared_expert_intermediate_size": o.SharedIntermediate,
		"full_attention_interval":         o.FullAttentionInterval,
		"layer_types":                     o.LayerTypes(),
		"linear_num_key_heads":            o.LinearKeyHeads,
		"linear_num_value_heads":          o.LinearValueHeads,
		"linear_key_head_dim":             o.LinearKeyDim,
		"linear_value_head_dim":           o.LinearValueDim,
		"linear_conv_kernel_dim":          o.ConvKernel,
		"partial_rotary_factor":           o.PartialRotary,
		"rope_parameters": map[string]any{
			"rope_type": "default", "rope_theta": o.RopeTheta, "partial_rotary_factor": o.PartialRotary,
			"mrope_section": mrope, "mrope_interleaved": true,
		},
		"max_position_embeddings": 262144,
		"attention_bias":          false,
		"attn_output_gate":        true,
		"tie_word_embeddings":     false,
		"mamba_ssm_dtype":         "float32",
		"eos_token_id":            o.EOSTokenIDs,
	}
	q := map[string]any{"group_size": o.GroupSize, "bits": o.Bits, "mode": "affine"}
	if o.GateBits != o.Bits {
		for _, m := range o.gateModules() {
			q[m] = map[string]any{"group_size": o.GroupSize, "bits": o.GateBits}
		}
	}
	top := map[string]any{
		"model_type":          "qwen3_5_moe",
		"architectures":       []string{"Qwen3_5MoeForConditionalGeneration"},
		"tie_word_embeddings": false,
		"text_config":         text,
		"quantization":        q,
		"quantization_config": q,
		"fmoe_synth":          map[string]any{"seed": o.Seed},
	}
	return json.MarshalIndent(top, "", "    ")
}

// Validate checks the options; every accepted set makes a checkpoint that
// formats.ParseConfig accepts and whose weights quantize.
func (o *Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrOptions}, args...)...)
	}
	for _, b := range []struct {
		name string
		v    int
	}{{"bits", o.Bits}, {"gate-bits", o.GateBits}} {
		if b.v != 2 && b.v != 4 && b.v != 8 {
			return bad("%s = %d, want 2, 4 or 8", b.name, b.v)
		}
	}
	if o.GroupSize <= 0 || o.GroupSize%4 != 0 {
		return bad("group size %d, want a positive multiple of 16/bits", o.GroupSize)
	}
	if o.Hidden%o.GroupSize != 0 || o.Intermediate%o.GroupSize != 0 || o.SharedIntermediate%o.GroupSize != 0 {
		return bad("hidden %d, intermediate %d and shared intermediate %d must be multiples of the group size %d",
			o.Hidden, o.Intermediate, o.SharedIntermediate, o.GroupSize)
	}
	if o.Vocab < MinVocab {
		return bad("vocab %d is below %d, the size the bundled Qwen3 tokenizer needs", o.Vocab, MinVocab)
	}
	if o.Shards < 0 {
		return bad("shards %d is negative", o.Shards)
	}
	cfg, err := o.ConfigJSON()
	if err != nil {
		return bad("%v", err)
	}
	if _, err := formats.ParseConfig(cfg); err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	return nil
}
