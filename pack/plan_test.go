package pack

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
)

func TestParseLayers(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want []int
		err  bool
	}{
		{"", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, false},
		{"all", []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, false},
		{"0-3,7", []int{0, 1, 2, 3, 7}, false},
		{"7, 2-3 ,3", []int{2, 3, 7}, false},
		{"9", []int{9}, false},
		{"10", nil, true},
		{"3-1", nil, true},
		{"-1", nil, true},
		{"a", nil, true},
		{"1,,2", nil, true},
	} {
		got, err := ParseLayers(tc.spec, 10)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("ParseLayers(%q) = %v, %v", tc.spec, got, err)
		}
		if err != nil && !errors.Is(err, ErrLayers) {
			t.Errorf("ParseLayers(%q) error %v does not wrap ErrLayers", tc.spec, err)
		}
	}
}

// inventory builds the expert tensors of a model from shapes alone; offsets
// are laid out per tensor in one fake shard. mutate may change a shape.
func inventory(cfg *formats.Config, bits, group int, mutate func(name string, shape []int64) []int64) map[string]checkpoint.Ref {
	out := map[string]checkpoint.Ref{}
	var off int64 = 64
	E, H, I := int64(cfg.NumExperts), int64(cfg.HiddenSize), int64(cfg.MoEIntermediateSize)
	per := int64(32 / bits)
	for l := range cfg.NumHiddenLayers {
		for _, p := range []struct {
			name    string
			out, in int64
		}{{"gate_proj", I, H}, {"up_proj", I, H}, {"down_proj", H, I}} {
			for _, part := range []struct {
				suffix string
				dt     formats.DType
				cols   int64
			}{{"weight", formats.U32, p.in / per}, {"scales", formats.BF16, p.in / int64(group)}, {"biases", formats.BF16, p.in / int64(group)}} {
				name := fmt.Sprintf("language_model.model.layers.%d.mlp.switch_mlp.%s.%s", l, p.name, part.suffix)
				shape := []int64{E, p.out, part.cols}
				if mutate != nil {
					shape = mutate(name, shape)
				}
				size, _ := formats.ByteSize(part.dt, shape)
				out[name] = checkpoint.Ref{File: fmt.Sprintf("s%d.safetensors", l%2), Info: formats.TensorInfo{Name: name, DType: part.dt, Shape: shape, Offset: off, Size: size}}
				off += size
			}
		}
	}
	out["language_model.model.norm.weight"] = checkpoint.Ref{File: "s0.safetensors", Info: formats.TensorInfo{DType: formats.BF16, Shape: []int64{H}, Size: 2 * H}}
	return out
}

func cfg397() *formats.Config {
	return &formats.Config{HiddenSize: 4096, MoEIntermediateSize: 1024, NumExperts: 512, NumHiddenLayers: 3,
		Quantization: &formats.QuantConfig{GroupSize: 64, Bits: 4}}
}

func TestPlanPack397(t *testing.T) {
	cfg := cfg397()
	inv := inventory(cfg, 4, 64, nil)
	p, err := PlanPack(inv, cfg, Options{Bits: 4, Layout: formats.PackLayoutLayer, Layers: []int{0, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Layout.Expert.Size != 7077888 || len(p.Outputs) != 2 || p.Outputs[1].Name != "layer_02.bin" || p.Outputs[0].Size != 512*7077888 {
		t.Fatalf("layout %+v outputs %d", p.Layout.Expert.Size, len(p.Outputs))
	}
	// Expert 17, component down_proj.scales (index 7) of layer 2.
	pc := p.Outputs[1].Pieces[17*9+7]
	src := inv["language_model.model.layers.2.mlp.switch_mlp.down_proj.scales"]
	if pc.Dst != 17*7077888+6815744 || pc.Len != 131072 || pc.SrcOff != src.Info.Offset+17*131072 || p.Sources[pc.Src] != "s0.safetensors" {
		t.Errorf("piece %+v", pc)
	}
	if ex := p.Experts[1][17]; ex != (ExpertRef{2, 17}) || !strings.HasSuffix(p.Tensors[1][17*9+7], "down_proj.scales") {
		t.Errorf("expert ref %+v tensor %s", ex, p.Tensors[1][17*9+7])
	}
	p, err = PlanPack(inv, cfg, Options{Bits: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Outputs) != 3*512 || p.Outputs[513].Name != "layer_01_expert_0001.bin" || p.Outputs[513].Size != 7077888 || p.TotalBytes() != 3*512*7077888 {
		t.Errorf("expert layout: %d outputs, [513] = %s", len(p.Outputs), p.Outputs[513].Name)
	}
	if err := p.Layout.Validate(); err != nil {
		t.Error(err)
	}
}

func TestPlanPackErrors(t *testing.T) {
	cfg := cfg397()
	const victim = "language_model.model.layers.1.mlp.switch_mlp.up_proj.scales"
	for _, tc := range []struct {
		name   string
		inv    map[string]checkpoint.Ref
		opt    Options
		want   error
		naming string
	}{
		{"bits 2 from a 4-bit source", inventory(cfg, 4, 64, nil), Options{Bits: 2}, ErrBits, "gate_proj.weight"},
		{"bits 8 from a 4-bit source", inventory(cfg, 4, 64, nil), Options{Bits: 8}, ErrBits, "gate_proj.weight"},
		{"shape inconsistent", inventory(cfg, 4, 64, func(n string, s []int64) []int64 {
			if n == victim {
				return []int64{s[0], s[1], s[2] + 1}
			}
			return s
		}), Options{Bits: 4}, ErrExpertShape, victim},
		{"fewer experts than config", inventory(cfg, 4, 64, func(n string, s []int64) []int64 {
			if strings.Contains(n, "layers.1.") && strings.HasSuffix(n, "down_proj.weight") {
				return []int64{256, s[1], s[2]}
			}
			return s
		}), Options{Bits: 4}, ErrExpertShape, "layers.1.mlp.switch_mlp.down_proj.weight"},
		{"missing tensor", func() map[string]checkpoint.Ref {
			inv := inventory(cfg, 4, 64, nil)
			delete(inv, victim)
			return inv
		}(), Options{Bits: 4}, checkpoint.ErrMissingTensor, victim},
		{"layer out of range", inventory(cfg, 4, 64, nil), Options{Bits: 4, Layers: []int{3}}, ErrLayers, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PlanPack(tc.inv, cfg, tc.opt)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.naming) {
				t.Errorf("error %q does not name %q", err, tc.naming)
			}
		})
	}
}
