package formats

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
)

// qwen397Text is the 397B text_config as in the real config.json
// (reference §1.2), with rope values only in rope_parameters.
const qwen397Text = `{
 "model_type": "qwen3_5_moe_text", "hidden_size": 4096, "num_hidden_layers": 60,
 "num_attention_heads": 32, "num_key_value_heads": 2, "head_dim": 256, "vocab_size": 248320,
 "rms_norm_eps": 1e-06, "num_experts": 512, "num_experts_per_tok": 10,
 "moe_intermediate_size": 1024, "shared_expert_intermediate_size": 1024,
 "full_attention_interval": 4, "linear_num_key_heads": 16, "linear_num_value_heads": 64,
 "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4,
 "rope_parameters": {"rope_type": "default", "rope_theta": 10000000, "partial_rotary_factor": 0.25,
   "mrope_section": [11, 11, 10], "mrope_interleaved": true},
 "eos_token_id": 248044
}`

func nested(text string, extra string) []byte {
	return []byte(`{"model_type":"qwen3_5_moe","tie_word_embeddings":false,` + extra + `"text_config":` + text + `}`)
}

func TestParseConfig397B(t *testing.T) {
	c, err := ParseConfig(nested(qwen397Text, `"eos_token_id":[248046,248044],"quantization":{"group_size":64,"bits":4,"mode":"affine","language_model.model.layers.0.mlp.gate":{"group_size":64,"bits":8},"vision_tower.x":false},`))
	if err != nil {
		t.Fatal(err)
	}
	if c.HiddenSize != 4096 || c.HeadDim != 256 || c.NumExperts != 512 || c.RopeTheta != 1e7 || c.PartialRotaryFactor != 0.25 {
		t.Errorf("config %+v", c)
	}
	if c.RotaryDim() != 64 || c.LinearConvDim() != 12288 || c.NumFullAttentionLayers() != 15 {
		t.Errorf("derived rotary %d conv %d full %d", c.RotaryDim(), c.LinearConvDim(), c.NumFullAttentionLayers())
	}
	for i := 0; i < 60; i++ {
		if c.IsFullAttention(i) != ((i+1)%4 == 0) {
			t.Errorf("layer %d full=%v", i, c.IsFullAttention(i))
		}
	}
	if !reflect.DeepEqual(c.EOSTokenIDs, []int{248044, 248046}) {
		t.Errorf("eos %v", c.EOSTokenIDs)
	}
	q := c.Quantization
	if q == nil || q.Bits != 4 || q.GroupSize != 64 {
		t.Fatalf("quantization %+v", q)
	}
	if s, ok := q.Lookup("language_model.model.layers.0.mlp.gate"); !ok || s.Bits != 8 {
		t.Errorf("gate override %v %v", s, ok)
	}
	if s, ok := q.Lookup("model.layers.0.mlp.gate"); !ok || s.Bits != 8 {
		t.Errorf("gate override without prefix %v %v", s, ok)
	}
	if _, ok := q.Lookup("vision_tower.x"); ok {
		t.Errorf("false override treated as quantized")
	}
	if s, ok := q.Lookup("language_model.lm_head"); !ok || s.Bits != 4 {
		t.Errorf("default %v %v", s, ok)
	}
}

func TestParseConfigFlatAndVariants(t *testing.T) {
	var m map[string]any
	if err := json.Unmarshal([]byte(qwen397Text), &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "rope_parameters")
	delete(m, "full_attention_interval")
	m["rope_theta"] = 1e6
	m["partial_rotary_factor"] = 0.5
	types := make([]string, 60)
	for i := range types {
		types[i] = LinearAttention
		if i%3 == 2 {
			types[i] = FullAttention
		}
	}
	m["layer_types"] = types
	m["quantization_config"] = map[string]any{"group_size": 32, "bits": 8}
	b, _ := json.Marshal(m)
	c, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.RopeTheta != 1e6 || c.PartialRotaryFactor != 0.5 || c.FullAttentionInterval != 3 || !c.IsFullAttention(2) || c.IsFullAttention(3) {
		t.Errorf("flat config %+v", c)
	}
	if c.Quantization == nil || c.Quantization.GroupSize != 32 {
		t.Errorf("quantization_config not read: %+v", c.Quantization)
	}
}

func TestParseConfigErrors(t *testing.T) {
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		_ = json.Unmarshal([]byte(qwen397Text), &m)
		f(m)
		b, _ := json.Marshal(map[string]any{"text_config": m})
		return b
	}
	cases := []struct {
		name, field string
		data        []byte
	}{
		{"not JSON", "", []byte(`{`)},
		{"array", "", []byte(`[]`)},
		{"missing hidden_size", "hidden_size", edit(func(m map[string]any) { delete(m, "hidden_size") })},
		{"missing rope_theta", "rope_theta", edit(func(m map[string]any) { delete(m, "rope_parameters") })},
		{"string size", "num_experts", edit(func(m map[string]any) { m["num_experts"] = "512" })},
		{"zero heads", "num_attention_heads", edit(func(m map[string]any) { m["num_attention_heads"] = 0 })},
		{"layer_types length", "layer_types", edit(func(m map[string]any) { m["layer_types"] = []string{FullAttention} })},
		{"layer_types value", "layer_types", edit(func(m map[string]any) {
			t := make([]string, 60)
			for i := range t {
				t[i] = "sliding_attention"
			}
			m["layer_types"] = t
		})},
		{"no schedule", "full_attention_interval", edit(func(m map[string]any) { delete(m, "full_attention_interval") })},
		{"top-k > experts", "num_experts_per_tok", edit(func(m map[string]any) { m["num_experts_per_tok"] = 513 })},
		{"gqa", "num_key_value_heads", edit(func(m map[string]any) { m["num_key_value_heads"] = 3 })},
		{"linear heads", "linear_num_value_heads", edit(func(m map[string]any) { m["linear_num_value_heads"] = 17 })},
		{"odd rotary", "partial_rotary_factor", edit(func(m map[string]any) { m["partial_rotary_factor"] = 0.0039 })},
		{"bad bits", "bits", edit(func(m map[string]any) { m["quantization"] = map[string]any{"group_size": 64, "bits": 7} })},
		{"bad mode", "mode", edit(func(m map[string]any) {
			m["quantization"] = map[string]any{"group_size": 32, "bits": 4, "mode": "mxfp4"}
		})},
		{"quant lacks bits", "bits", edit(func(m map[string]any) { m["quantization"] = map[string]any{"group_size": 64} })},
		{"bad eos", "eos_token_id", edit(func(m map[string]any) { m["eos_token_id"] = "x" })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig(c.data)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("got %v, want ErrConfig", err)
			}
			if !strings.Contains(err.Error(), c.field) {
				t.Errorf("error %q does not name %s", err, c.field)
			}
		})
	}
}

func TestManifestConfigRoundTrip(t *testing.T) {
	c, err := ParseConfig(nested(qwen397Text, `"quantization":{"group_size":64,"bits":4,"language_model.model.layers.0.mlp.gate":{"group_size":64,"bits":8},"language_model.model.layers.0.mlp.shared_expert_gate":false},`))
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Model: "x", NumTensors: 1, Tensors: map[string]ManifestTensor{"a": {Size: 4, Shape: []int64{2}, DType: "BF16"}}, Config: ManifestConfig(c)}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ConfigFromManifest(m2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, c2) {
		t.Errorf("round trip:\n%+v\n%+v", c, c2)
	}
	for _, k := range []string{"hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "rms_norm_eps", "num_experts", "num_experts_per_tok", "moe_intermediate_size", "shared_expert_intermediate_size", "full_attention_interval", "linear_num_value_heads", "linear_num_key_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim", "partial_rotary_factor", "rope_theta", "layer_types"} {
		if _, ok := m2.Config[k]; !ok {
			t.Errorf("manifest config lacks flash-moe key %s", k)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(qwen397Text))
	f.Add(nested(qwen397Text, `"quantization":{"group_size":64,"bits":4,"a":false,"b":{"bits":8}},`))
	f.Add([]byte(`{"text_config":null}`))
	// One field changed each: seeds that reach the checks past the first
	// (a short run mutates from here, far from the whole file).
	var base map[string]any
	if err := json.Unmarshal([]byte(qwen397Text), &base); err != nil {
		f.Fatal(err)
	}
	for _, ch := range []struct {
		key string
		val any
	}{
		{"layer_types", nil}, {"num_experts_per_tok", 600}, {"partial_rotary_factor", 0}, {"head_dim", -1},
		{"num_key_value_heads", 3}, {"full_attention_interval", 0}, {"hidden_size", "4096"}, {"rms_norm_eps", nil},
		{"num_hidden_layers", 3}, {"linear_conv_kernel_dim", 0},
	} {
		m := maps.Clone(base)
		if ch.val == nil {
			delete(m, ch.key)
		} else {
			m[ch.key] = ch.val
		}
		b, err := json.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		if len(c.LayerTypes) != c.NumHiddenLayers || c.RotaryDim() < 2 || c.NumExpertsPerTok > c.NumExperts {
			t.Fatalf("accepted inconsistent config %+v", c)
		}
		// The manifest config block must round-trip whatever was accepted.
		m := &Manifest{Config: ManifestConfig(c)}
		raw, _ := json.Marshal(m.Config)
		_ = json.Unmarshal(raw, &m.Config)
		c2, err := ConfigFromManifest(m)
		if err != nil {
			t.Fatalf("round trip: %v", err)
		}
		if c2.HiddenSize != c.HiddenSize || !reflect.DeepEqual(c2.LayerTypes, c.LayerTypes) {
			t.Fatalf("round trip changed the config")
		}
	})
}

func TestParseConfigIntervalConsistency(t *testing.T) {
	var m map[string]any
	_ = json.Unmarshal([]byte(qwen397Text), &m)
	m["num_hidden_layers"] = 2
	m["layer_types"] = []string{LinearAttention, LinearAttention}
	b, _ := json.Marshal(m)
	c, err := ParseConfig(b)
	if err != nil || c.FullAttentionInterval != 4 || c.NumFullAttentionLayers() != 0 {
		t.Fatalf("short all-linear schedule with interval 4: %v %+v", err, c)
	}
	m["layer_types"] = []string{LinearAttention, FullAttention}
	b, _ = json.Marshal(m)
	if _, err := ParseConfig(b); !errors.Is(err, ErrConfig) {
		t.Fatalf("disagreeing layer_types accepted: %v", err)
	}
}
