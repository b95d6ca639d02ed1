package formats

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Manifest is flash-moe's model_weights.json: where each non-expert tensor
// sits in model_weights.bin, plus a config block.
type Manifest struct {
	Model      string                    `json:"model"`
	NumTensors int                       `json:"num_tensors"`
	Tensors    map[string]ManifestTensor `json:"tensors"`
	Config     map[string]any            `json:"config"`
}

// ManifestTensor locates one tensor in model_weights.bin.
type ManifestTensor struct {
	Offset int64   `json:"offset"`
	Size   int64   `json:"size"`
	Shape  []int64 `json:"shape"`
	DType  string  `json:"dtype"`
}

// ParseManifest parses and checks model_weights.json: num_tensors equals the
// number of tensors, every dtype is known, size == product(shape)×dtype size,
// offsets are non-negative and no two tensors overlap. Errors wrap
// ErrManifest (plus ErrDType/ErrShape where relevant) and name the tensor.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrManifest, err)
	}
	if m.Tensors == nil {
		return nil, fmt.Errorf("%w: no tensors", ErrManifest)
	}
	if m.NumTensors != len(m.Tensors) {
		return nil, fmt.Errorf("%w: num_tensors = %d but %d tensors listed", ErrManifest, m.NumTensors, len(m.Tensors))
	}
	names := make([]string, 0, len(m.Tensors))
	for name, t := range m.Tensors {
		if t.Shape == nil {
			return nil, fmt.Errorf("%w: tensor %q has no shape", ErrManifest, name)
		}
		size, err := ByteSize(DType(t.DType), t.Shape)
		if err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %w", ErrManifest, name, err)
		}
		if size != t.Size {
			return nil, fmt.Errorf("%w: tensor %q: size %d does not match shape %v of %s (%d bytes): %w", ErrManifest, name, t.Size, t.Shape, t.DType, size, ErrShape)
		}
		if t.Offset < 0 || t.Offset > 1<<62-t.Size {
			return nil, fmt.Errorf("%w: tensor %q: offset %d out of range", ErrManifest, name, t.Offset)
		}
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := m.Tensors[names[i]], m.Tensors[names[j]]
		if a.Offset != b.Offset {
			return a.Offset < b.Offset
		}
		return names[i] < names[j]
	})
	for i := 1; i < len(names); i++ {
		p, t := m.Tensors[names[i-1]], m.Tensors[names[i]]
		if t.Offset < p.Offset+p.Size {
			return nil, fmt.Errorf("%w: tensor %q overlaps tensor %q: %w", ErrManifest, names[i], names[i-1], ErrOffsets)
		}
	}
	if m.Config == nil {
		m.Config = map[string]any{}
	}
	return &m, nil
}

// End returns the byte just past the last tensor: the minimum size of
// model_weights.bin.
func (m *Manifest) End() int64 {
	var end int64
	for _, t := range m.Tensors {
		end = max(end, t.Offset+t.Size)
	}
	return end
}

// ManifestConfig returns the manifest's config block for c: every key
// flash-moe's extract_weights.py writes (hidden_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads, head_dim, vocab_size,
// rms_norm_eps, num_experts, num_experts_per_tok, moe_intermediate_size,
// shared_expert_intermediate_size, full_attention_interval,
// linear_num_value_heads, linear_num_key_heads, linear_key_head_dim,
// linear_value_head_dim, linear_conv_kernel_dim, partial_rotary_factor,
// rope_theta, layer_types), filled from c, plus fmoe's extras (model_type,
// tie_word_embeddings, eos_token_ids, and for quantized models group_size,
// bits and the MLX-form "quantization" block with its overrides), so that
// ConfigFromManifest gives c back.
func ManifestConfig(c *Config) map[string]any {
	m := map[string]any{
		"hidden_size":                     c.HiddenSize,
		"num_hidden_layers":               c.NumHiddenLayers,
		"num_attention_heads":             c.NumAttentionHeads,
		"num_key_value_heads":             c.NumKeyValueHeads,
		"head_dim":                        c.HeadDim,
		"vocab_size":                      c.VocabSize,
		"rms_norm_eps":                    c.RMSNormEps,
		"num_experts":                     c.NumExperts,
		"num_experts_per_tok":             c.NumExpertsPerTok,
		"moe_intermediate_size":           c.MoEIntermediateSize,
		"shared_expert_intermediate_size": c.SharedExpertIntermediateSize,
		"full_attention_interval":         c.FullAttentionInterval,
		"linear_num_value_heads":          c.LinearNumValueHeads,
		"linear_num_key_heads":            c.LinearNumKeyHeads,
		"linear_key_head_dim":             c.LinearKeyHeadDim,
		"linear_value_head_dim":           c.LinearValueHeadDim,
		"linear_conv_kernel_dim":          c.LinearConvKernelDim,
		"partial_rotary_factor":           c.PartialRotaryFactor,
		"rope_theta":                      c.RopeTheta,
		"layer_types":                     append([]string(nil), c.LayerTypes...),
		"model_type":                      c.ModelType,
		"tie_word_embeddings":             c.TieWordEmbeddings,
		"eos_token_ids":                   append([]int{}, c.EOSTokenIDs...),
	}
	if q := c.Quantization; q != nil {
		m["group_size"] = q.GroupSize
		m["bits"] = q.Bits
		qb := map[string]any{"group_size": q.GroupSize, "bits": q.Bits}
		for k, o := range q.Overrides {
			if o == nil {
				qb[k] = false
			} else {
				qb[k] = map[string]any{"group_size": o.GroupSize, "bits": o.Bits}
			}
		}
		m["quantization"] = qb
	}
	return m
}

// ConfigFromManifest reads the model configuration back from a manifest's
// config block (fmoe's, or flash-moe's hard-coded one).
func ConfigFromManifest(m *Manifest) (*Config, error) {
	data, err := json.Marshal(m.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: config block: %v", ErrManifest, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("manifest config block: %w", err)
	}
	return c, nil
}
