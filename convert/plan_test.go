package convert

import (
	"errors"
	"testing"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
)

// refs builds an inventory from name → (dtype, shape); data offsets are
// arbitrary (the plan must not depend on them).
func refs(t *testing.T, specs map[string][]int64) map[string]checkpoint.Ref {
	t.Helper()
	out := map[string]checkpoint.Ref{}
	var off int64 = 1000
	for name, shape := range specs {
		dt := formats.BF16
		if len(shape) > 1 {
			dt = formats.U32
		}
		size, err := formats.ByteSize(dt, shape)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = checkpoint.Ref{File: "s.safetensors", Info: formats.TensorInfo{Name: name, DType: dt, Shape: shape, Offset: off, Size: size}}
		off += size
	}
	return out
}

func TestPlanExtract(t *testing.T) {
	in := refs(t, map[string][]int64{
		"language_model.lm_head.weight":                                  {3, 5}, // 60 bytes
		"language_model.model.layers.2.input_layernorm.weight":           {7},    // 14 bytes
		"language_model.model.layers.10.input_layernorm.weight":          {64},
		"language_model.model.layers.0.mlp.switch_mlp.up_proj.scales":    {4, 2, 2},
		"language_model.model.layers.0.mlp.switch_mlp.down_proj.weight":  {4, 2, 2},
		"language_model.model.layers.0.mlp.shared_expert.up_proj.weight": {2, 2},
		"language_model.model.norm.weight":                               {1},
		"vision_tower.blocks.0.weight":                                   {2},
		"model.visual.merger.weight":                                     {2},
		"mtp.layers.0.fc.weight":                                         {2},
		"language_model.mtp.norm.weight":                                 {2},
	})
	p, err := PlanExtract(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name string
		off  int64
	}{
		{"lm_head.weight", 0},
		{"model.layers.0.mlp.shared_expert.up_proj.weight", 64},
		{"model.layers.10.input_layernorm.weight", 128},
		{"model.layers.2.input_layernorm.weight", 256},
		{"model.norm.weight", 320},
	}
	if len(p.Entries) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(p.Entries), len(want), p.Entries)
	}
	for i, w := range want {
		if e := p.Entries[i]; e.Name != w.name || e.Offset != w.off {
			t.Errorf("entry %d = %s at %d, want %s at %d", i, e.Name, e.Offset, w.name, w.off)
		}
	}
	if p.Size != 322 { // no trailing pad
		t.Errorf("size %d, want 322", p.Size)
	}
	if p.Skipped[SkipVision] != 2 || p.Skipped[SkipMTP] != 2 || p.Skipped[SkipExpert] != 2 {
		t.Errorf("skipped %v", p.Skipped)
	}
	m := p.Manifest("x", nil)
	if m.NumTensors != 5 || m.Tensors["model.norm.weight"].Offset != 320 || m.Tensors["lm_head.weight"].Size != 60 {
		t.Errorf("manifest %+v", m)
	}
}

func TestPlanExtractDuplicate(t *testing.T) {
	_, err := PlanExtract(refs(t, map[string][]int64{"language_model.model.norm.weight": {2}, "model.norm.weight": {2}}))
	if !errors.Is(err, ErrDuplicateName) {
		t.Fatalf("err = %v, want ErrDuplicateName", err)
	}
}

func TestSkipReason(t *testing.T) {
	for name, want := range map[string]string{
		"language_model.model.layers.3.mlp.switch_mlp.gate_proj.biases":    SkipExpert,
		"language_model.model.layers.3.mlp.switch_mlp.gate_proj.bias":      "",
		"language_model.model.layers.3.mlp.shared_expert.gate_proj.weight": "",
		"language_model.model.layers.3.mlp.gate.weight":                    "",
		"vision_tower.x":                       SkipVision,
		"model.visualize":                      SkipVision, // flash-moe's regex has no dot after "visual"
		"mtp.fc.weight":                        SkipMTP,
		"language_model.model.layers.0.smtp.x": "",
	} {
		if got := SkipReason(name); got != want {
			t.Errorf("SkipReason(%q) = %q, want %q", name, got, want)
		}
	}
}
