package formats

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Layer kinds as spelled in config.json's layer_types.
const (
	FullAttention   = "full_attention"
	LinearAttention = "linear_attention"
)

// Config is the validated text configuration of a Qwen3.5-MoE model. JSON
// tags mirror the Hugging Face names; ParseConfig accepts them flat or
// nested under "text_config".
type Config struct {
	ModelType                    string   `json:"model_type"`
	HiddenSize                   int      `json:"hidden_size"`
	NumHiddenLayers              int      `json:"num_hidden_layers"`
	NumAttentionHeads            int      `json:"num_attention_heads"`
	NumKeyValueHeads             int      `json:"num_key_value_heads"`
	HeadDim                      int      `json:"head_dim"`
	VocabSize                    int      `json:"vocab_size"`
	RMSNormEps                   float64  `json:"rms_norm_eps"`
	NumExperts                   int      `json:"num_experts"`
	NumExpertsPerTok             int      `json:"num_experts_per_tok"`
	MoEIntermediateSize          int      `json:"moe_intermediate_size"`
	SharedExpertIntermediateSize int      `json:"shared_expert_intermediate_size"`
	FullAttentionInterval        int      `json:"full_attention_interval"` // 0 when layer_types follows no interval
	LayerTypes                   []string `json:"layer_types"`
	LinearNumKeyHeads            int      `json:"linear_num_key_heads"`
	LinearNumValueHeads          int      `json:"linear_num_value_heads"`
	LinearKeyHeadDim             int      `json:"linear_key_head_dim"`
	LinearValueHeadDim           int      `json:"linear_value_head_dim"`
	LinearConvKernelDim          int      `json:"linear_conv_kernel_dim"`
	RopeTheta                    float64  `json:"rope_theta"`
	PartialRotaryFactor          float64  `json:"partial_rotary_factor"`
	TieWordEmbeddings            bool     `json:"tie_word_embeddings"`
	EOSTokenIDs                  []int    `json:"eos_token_ids"`
	// Quantization is the MLX quantization block; nil for an unquantized
	// checkpoint.
	Quantization *QuantConfig `json:"-"`
}

// QuantConfig is MLX's "quantization" (or "quantization_config") block.
type QuantConfig struct {
	GroupSize, Bits int
	// Overrides maps a module path exactly as written in config.json (e.g.
	// "language_model.model.layers.0.mlp.gate") to its parameters; a nil
	// value means the module is not quantized ("path": false).
	Overrides map[string]*QuantSpec
}

// QuantSpec is the quantization of one module.
type QuantSpec struct{ GroupSize, Bits int }

// Lookup returns the quantization of module (a module path without the
// ".weight" suffix). An override keyed by the exact path, or by the path
// with or without the "language_model." prefix, wins over the defaults;
// ok is false when the override says the module is not quantized.
func (q *QuantConfig) Lookup(module string) (spec QuantSpec, ok bool) {
	alt := "language_model." + module
	if s, found := strings.CutPrefix(module, "language_model."); found {
		alt = s
	}
	for _, k := range []string{module, alt} {
		if o, found := q.Overrides[k]; found {
			if o == nil {
				return QuantSpec{}, false
			}
			return *o, true
		}
	}
	return QuantSpec{GroupSize: q.GroupSize, Bits: q.Bits}, true
}

// IsFullAttention reports whether layer uses full (softmax) attention rather
// than a GatedDeltaNet linear attention.
func (c *Config) IsFullAttention(layer int) bool {
	return layer >= 0 && layer < len(c.LayerTypes) && c.LayerTypes[layer] == FullAttention
}

// RotaryDim is the number of leading head dimensions rotated by RoPE:
// int(head_dim × partial_rotary_factor).
func (c *Config) RotaryDim() int { return int(float64(c.HeadDim) * c.PartialRotaryFactor) }

// NumFullAttentionLayers counts the full-attention layers.
func (c *Config) NumFullAttentionLayers() int {
	n := 0
	for i := range c.LayerTypes {
		if c.IsFullAttention(i) {
			n++
		}
	}
	return n
}

// LinearKeyDim is linear_num_key_heads × linear_key_head_dim.
func (c *Config) LinearKeyDim() int { return c.LinearNumKeyHeads * c.LinearKeyHeadDim }

// LinearValueDim is linear_num_value_heads × linear_value_head_dim.
func (c *Config) LinearValueDim() int { return c.LinearNumValueHeads * c.LinearValueHeadDim }

// LinearConvDim is the width of the GatedDeltaNet causal conv: 2·key_dim + value_dim.
func (c *Config) LinearConvDim() int { return 2*c.LinearKeyDim() + c.LinearValueDim() }

// field names ParseConfig reads; the text config wins over the top level.
type rawConfig map[string]json.RawMessage

// ParseConfig parses config.json. Hyper-parameters are read from
// "text_config" when present, else from the top level (flat config);
// rope_theta and partial_rotary_factor may also sit in "rope_parameters"
// (or the older "rope_scaling"); layer_types is derived from
// full_attention_interval when absent ((i+1) % interval == 0 is full
// attention); "quantization" or "quantization_config" (top level or in the
// text config) gives the MLX quantization with per-module overrides.
// Errors wrap ErrConfig and name the field.
func ParseConfig(data []byte) (*Config, error) {
	var top rawConfig
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if top == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrConfig)
	}
	text := top
	if tc, ok := top["text_config"]; ok && !jsonIsNull(tc) {
		text = nil // a fresh map: unmarshalling into top would merge into it
		if err := json.Unmarshal(tc, &text); err != nil || text == nil {
			return nil, fmt.Errorf("%w: text_config is not an object", ErrConfig)
		}
	}
	p := &parser{text: text, top: top}
	c := &Config{}
	c.ModelType = p.str("model_type")
	p.req("hidden_size", &c.HiddenSize)
	p.req("num_hidden_layers", &c.NumHiddenLayers)
	p.req("num_attention_heads", &c.NumAttentionHeads)
	p.req("num_key_value_heads", &c.NumKeyValueHeads)
	p.req("head_dim", &c.HeadDim)
	p.req("vocab_size", &c.VocabSize)
	p.req("num_experts", &c.NumExperts)
	p.req("num_experts_per_tok", &c.NumExpertsPerTok)
	p.req("moe_intermediate_size", &c.MoEIntermediateSize)
	p.req("shared_expert_intermediate_size", &c.SharedExpertIntermediateSize)
	p.req("linear_num_key_heads", &c.LinearNumKeyHeads)
	p.req("linear_num_value_heads", &c.LinearNumValueHeads)
	p.req("linear_key_head_dim", &c.LinearKeyHeadDim)
	p.req("linear_value_head_dim", &c.LinearValueHeadDim)
	p.req("linear_conv_kernel_dim", &c.LinearConvKernelDim)
	p.reqFloat("rms_norm_eps", &c.RMSNormEps, "")
	p.reqFloat("rope_theta", &c.RopeTheta, "rope_parameters", "rope_scaling")
	p.reqFloat("partial_rotary_factor", &c.PartialRotaryFactor, "rope_parameters", "rope_scaling")
	p.opt("full_attention_interval", &c.FullAttentionInterval)
	p.opt("layer_types", &c.LayerTypes)
	p.opt("tie_word_embeddings", &c.TieWordEmbeddings)
	c.EOSTokenIDs = p.eos()
	c.Quantization = p.quant()
	if p.err != nil {
		return nil, p.err
	}
	if err := c.finish(); err != nil {
		return nil, err
	}
	return c, nil
}

// finish derives layer_types / full_attention_interval and validates.
func (c *Config) finish() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"hidden_size", c.HiddenSize}, {"num_hidden_layers", c.NumHiddenLayers},
		{"num_attention_heads", c.NumAttentionHeads}, {"num_key_value_heads", c.NumKeyValueHeads},
		{"head_dim", c.HeadDim}, {"vocab_size", c.VocabSize}, {"num_experts", c.NumExperts},
		{"num_experts_per_tok", c.NumExpertsPerTok}, {"moe_intermediate_size", c.MoEIntermediateSize},
		{"shared_expert_intermediate_size", c.SharedExpertIntermediateSize},
		{"linear_num_key_heads", c.LinearNumKeyHeads}, {"linear_num_value_heads", c.LinearNumValueHeads},
		{"linear_key_head_dim", c.LinearKeyHeadDim}, {"linear_value_head_dim", c.LinearValueHeadDim},
		{"linear_conv_kernel_dim", c.LinearConvKernelDim},
	} {
		if f.v <= 0 || f.v > 1<<30 {
			return bad("%s = %d, want a positive size", f.name, f.v)
		}
	}
	if c.FullAttentionInterval < 0 {
		return bad("full_attention_interval = %d is negative", c.FullAttentionInterval)
	}
	if c.NumHiddenLayers > 1<<16 {
		return bad("num_hidden_layers = %d is implausible", c.NumHiddenLayers)
	}
	if c.LayerTypes == nil {
		if c.FullAttentionInterval == 0 {
			return bad("neither layer_types nor full_attention_interval is set")
		}
		c.LayerTypes = make([]string, c.NumHiddenLayers)
		for i := range c.LayerTypes {
			c.LayerTypes[i] = LinearAttention
			if (i+1)%c.FullAttentionInterval == 0 {
				c.LayerTypes[i] = FullAttention
			}
		}
	} else {
		if len(c.LayerTypes) != c.NumHiddenLayers {
			return bad("layer_types has %d entries but num_hidden_layers = %d", len(c.LayerTypes), c.NumHiddenLayers)
		}
		for i, t := range c.LayerTypes {
			if t != FullAttention && t != LinearAttention {
				return bad("layer_types[%d] = %q, want %q or %q", i, t, FullAttention, LinearAttention)
			}
		}
		if k := c.FullAttentionInterval; k != 0 {
			for i, t := range c.LayerTypes {
				if (t == FullAttention) != ((i+1)%k == 0) {
					return bad("layer_types[%d] = %q disagrees with full_attention_interval = %d", i, t, k)
				}
			}
		} else {
			c.FullAttentionInterval = intervalOf(c.LayerTypes)
		}
	}
	if c.NumExpertsPerTok > c.NumExperts {
		return bad("num_experts_per_tok = %d exceeds num_experts = %d", c.NumExpertsPerTok, c.NumExperts)
	}
	if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		return bad("num_attention_heads = %d is not a multiple of num_key_value_heads = %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if c.LinearNumValueHeads%c.LinearNumKeyHeads != 0 {
		return bad("linear_num_value_heads = %d is not a multiple of linear_num_key_heads = %d", c.LinearNumValueHeads, c.LinearNumKeyHeads)
	}
	if !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
		return bad("rms_norm_eps = %g, want in (0, 1)", c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) {
		return bad("rope_theta = %g, want > 0", c.RopeTheta)
	}
	if !(c.PartialRotaryFactor > 0 && c.PartialRotaryFactor <= 1) {
		return bad("partial_rotary_factor = %g, want in (0, 1]", c.PartialRotaryFactor)
	}
	if rd := c.RotaryDim(); rd < 2 || rd%2 != 0 {
		return bad("rotary dim int(head_dim %d × partial_rotary_factor %g) = %d, want even and ≥ 2", c.HeadDim, c.PartialRotaryFactor, rd)
	}
	for _, id := range c.EOSTokenIDs {
		if id < 0 {
			return bad("eos_token_id %d is negative", id)
		}
	}
	if q := c.Quantization; q != nil {
		if err := checkQuant("quantization", QuantSpec{q.GroupSize, q.Bits}); err != nil {
			return err
		}
		for k, o := range q.Overrides {
			if o != nil {
				if err := checkQuant(k, *o); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func checkQuant(where string, s QuantSpec) error {
	switch s.Bits {
	case 2, 3, 4, 5, 6, 8:
	default:
		return fmt.Errorf("%w: %s: bits = %d, want 2, 3, 4, 5, 6 or 8", ErrConfig, where, s.Bits)
	}
	if s.GroupSize <= 0 || s.GroupSize > 1<<20 {
		return fmt.Errorf("%w: %s: group_size = %d, want > 0", ErrConfig, where, s.GroupSize)
	}
	return nil
}

// intervalOf returns k when layer_types is exactly "full iff (i+1)%k == 0",
// else 0.
func intervalOf(types []string) int {
	for i, t := range types {
		if t == FullAttention {
			k := i + 1
			for j, u := range types {
				if (u == FullAttention) != ((j+1)%k == 0) {
					return 0
				}
			}
			return k
		}
	}
	return 0
}

type parser struct {
	text, top rawConfig
	err       error
}

func jsonIsNull(m json.RawMessage) bool {
	return len(bytes.TrimSpace(m)) == 0 || string(bytes.TrimSpace(m)) == "null"
}

func (p *parser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
}

// find returns the field from the text config, then the top level.
func (p *parser) find(name string) (json.RawMessage, bool) {
	if v, ok := p.text[name]; ok && !jsonIsNull(v) {
		return v, true
	}
	if v, ok := p.top[name]; ok && !jsonIsNull(v) {
		return v, true
	}
	return nil, false
}

func (p *parser) decode(name string, raw json.RawMessage, dst any) bool {
	if err := json.Unmarshal(raw, dst); err != nil {
		p.fail("field %s: %v", name, err)
		return false
	}
	return true
}

func (p *parser) str(name string) string {
	var s string
	if raw, ok := p.find(name); ok {
		p.decode(name, raw, &s)
	}
	return s
}

func (p *parser) req(name string, dst *int) {
	raw, ok := p.find(name)
	if !ok {
		p.fail("missing field %s", name)
		return
	}
	p.decode(name, raw, dst)
}

func (p *parser) opt(name string, dst any) bool {
	raw, ok := p.find(name)
	if ok {
		return p.decode(name, raw, dst)
	}
	return false
}

// reqFloat reads name from the config or from one of the nested blocks.
func (p *parser) reqFloat(name string, dst *float64, blocks ...string) {
	if raw, ok := p.find(name); ok {
		p.decode(name, raw, dst)
		return
	}
	for _, b := range blocks {
		if b == "" {
			continue
		}
		raw, ok := p.find(b)
		if !ok {
			continue
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		if v, ok := m[name]; ok && !jsonIsNull(v) {
			p.decode(b+"."+name, v, dst)
			return
		}
	}
	p.fail("missing field %s", name)
}

// eos collects eos_token_id (int or list) and eos_token_ids from the text
// config and the top level, de-duplicated, in order of appearance.
func (p *parser) eos() []int {
	var ids []int
	seen := map[int]bool{}
	for _, m := range []rawConfig{p.text, p.top} {
		for _, key := range []string{"eos_token_id", "eos_token_ids"} {
			raw, ok := m[key]
			if !ok || jsonIsNull(raw) {
				continue
			}
			var one int
			var many []int
			if json.Unmarshal(raw, &one) == nil {
				many = []int{one}
			} else if err := json.Unmarshal(raw, &many); err != nil {
				p.fail("field %s: want an integer or a list of integers", key)
				return nil
			}
			for _, id := range many {
				if !seen[id] {
					seen[id] = true
					ids = append(ids, id)
				}
			}
		}
	}
	return ids
}

// quant parses MLX's quantization block: {"group_size":64,"bits":4,
// "mode":"affine", "<module path>": {"group_size":64,"bits":8} | false}.
func (p *parser) quant() *QuantConfig {
	var raw json.RawMessage
	found := false
	for _, m := range []rawConfig{p.top, p.text} {
		for _, key := range []string{"quantization", "quantization_config"} {
			if v, ok := m[key]; ok && !jsonIsNull(v) && !found {
				raw, found = v, true
			}
		}
	}
	if !found {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		p.fail("quantization is not an object")
		return nil
	}
	if _, hf := m["quant_method"]; hf {
		// A Hugging Face quantization_config (e.g. {"quant_method":"fp8",
		// "weight_block_size":[128,128]}): the weights are not MLX-packed;
		// package hfconv reads it from config.json itself.
		return nil
	}
	q := &QuantConfig{Overrides: map[string]*QuantSpec{}}
	gs, ok1 := m["group_size"]
	bs, ok2 := m["bits"]
	if !ok1 || !ok2 {
		p.fail("quantization lacks group_size or bits")
		return nil
	}
	if !p.decode("quantization.group_size", gs, &q.GroupSize) || !p.decode("quantization.bits", bs, &q.Bits) {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := bytes.TrimSpace(m[k])
		switch {
		case k == "group_size" || k == "bits":
		case k == "mode":
			var mode string
			if json.Unmarshal(v, &mode) != nil || mode != "affine" {
				p.fail("quantization mode %s is not supported (want \"affine\")", v)
				return nil
			}
		case string(v) == "false":
			q.Overrides[k] = nil
		case len(v) > 0 && v[0] == '{':
			var s struct {
				GroupSize *int `json:"group_size"`
				Bits      *int `json:"bits"`
			}
			if !p.decode("quantization."+k, v, &s) {
				return nil
			}
			o := &QuantSpec{GroupSize: q.GroupSize, Bits: q.Bits}
			if s.GroupSize != nil {
				o.GroupSize = *s.GroupSize
			}
			if s.Bits != nil {
				o.Bits = *s.Bits
			}
			q.Overrides[k] = o
		default:
			// Scalars such as "mode": "affine" or "quant_method" are informational.
		}
	}
	return q
}
