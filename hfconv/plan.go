package hfconv

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/fmoe/fmoe/formats"
)

// ErrSource reports an HF checkpoint that cannot be converted: a tensor the
// rules do not know, an FP8 weight without its scale, inconsistent shapes.
var ErrSource = errors.New("hfconv: cannot convert checkpoint")

// Options choose the output quantization.
type Options struct {
	Bits      int // routed/shared experts and every other Linear (default 4)
	GroupSize int // default 64
	GateBits  int // mlp.gate and mlp.shared_expert_gate (default 8)
	// FP8Block is the FP8 weight_scale_inv block edge (default: the
	// checkpoint's weight_block_size, else 128).
	FP8Block int
}

func (o *Options) defaults() {
	if o.Bits == 0 {
		o.Bits = 4
	}
	if o.GroupSize == 0 {
		o.GroupSize = 64
	}
	if o.GateBits == 0 {
		o.GateBits = 8
	}
	if o.FP8Block == 0 {
		o.FP8Block = 128
	}
}

// transform is what happens to a dense (non-quantized) tensor.
type transform int

const (
	castBF16 transform = iota // cast to bf16
	plusOne                   // zero-centred norm: bf16(w + 1)
	keep                      // bytes unchanged (A_log)
)

// part maps output rows [Out, Out+N) of a matrix to rows [Row, Row+N) of a
// source tensor (rows flattened over the leading dimensions).
type part struct {
	Src      string
	Out, Row int
	N        int
}

// matrixSource describes a float matrix [Rows, Cols] assembled from parts.
type matrixSource struct {
	Rows, Cols int
	Parts      []part // sorted by Out, covering [0, Rows)
}

// Module is one quantized output module (three MLX tensors).
type Module struct {
	Name      string  // MLX module path, e.g. language_model.model.layers.0.mlp.gate
	Shape     []int64 // logical output shape, [out, in] or [E, out, in]
	Bits      int
	GroupSize int
	src       matrixSource
}

// Dense is one unquantized output tensor.
type Dense struct {
	Name  string
	Src   string
	Shape []int64
	DType formats.DType // output dtype
	tr    transform
}

// Plan is the full list of outputs computed from tensor names and shapes.
type Plan struct {
	Modules []*Module
	Dense   []*Dense
	// Overrides lists the modules quantized with other parameters than the
	// default (the MLX config's per-module entries).
	Overrides map[string]*formats.QuantSpec
}

var (
	layerRe    = regexp.MustCompile(`^layers\.(\d+)\.(.+)$`)
	perExpert  = regexp.MustCompile(`^mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight$`)
	dropPrefix = []string{"mtp.", "model.visual.", "visual.", "vision_tower.", "model.vision_tower."}
)

// textName strips the HF prefix of a text-model tensor. ok is false for a
// tensor to drop (MTP, vision); lmHead is true for the LM head.
func textName(name string) (rest string, ok bool) {
	for _, p := range dropPrefix {
		if strings.HasPrefix(name, p) {
			return "", false
		}
	}
	switch {
	case name == "lm_head.weight":
		return name, true
	case strings.HasPrefix(name, "model.language_model."):
		return strings.TrimPrefix(name, "model.language_model."), true
	case strings.HasPrefix(name, "model."):
		return strings.TrimPrefix(name, "model."), true
	}
	return name, true
}

// outName maps a stripped HF name to its MLX name.
func outName(rest string) string {
	if rest == "lm_head.weight" {
		return "language_model.lm_head.weight"
	}
	return "language_model.model." + rest
}

// IsHF reports whether a checkpoint (tensor name → shape) is an original
// HF release rather than an MLX conversion. Names alone cannot tell (MLX
// text-only conversions also use model.layers.*), so it looks at structure:
// quantized modules (.scales) or switch_mlp experts mean MLX; fused or
// per-expert HF experts, FP8 scales, or a conv1d in HF's [C, 1, K] layout
// mean HF.
func IsHF(shapes map[string][]int64) bool {
	hf := false
	for n, s := range shapes {
		switch {
		case strings.HasSuffix(n, ".scales") || strings.Contains(n, ".switch_mlp."):
			return false
		case strings.Contains(n, "mlp.experts.") || strings.HasSuffix(n, "_scale_inv"):
			hf = true
		case strings.HasSuffix(n, "conv1d.weight") && len(s) == 3 && s[1] == 1 && s[2] > 1:
			hf = true
		}
	}
	return hf
}

// MakePlan decides every output tensor from the source tensors' shapes.
func MakePlan(shapes map[string][]int64, cfg *formats.Config, opt Options) (*Plan, error) {
	opt.defaults()
	p := &Plan{Overrides: map[string]*formats.QuantSpec{}}
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	type expertSet struct {
		shape []int64
		parts []part
	}
	stacked := map[string]*expertSet{} // MLX module -> per-expert parts
	for _, name := range names {
		if strings.HasSuffix(name, "_scale_inv") {
			continue // consumed with its weight
		}
		rest, ok := textName(name)
		if !ok {
			continue
		}
		shape := shapes[name]
		sub := rest
		layerPrefix := ""
		if m := layerRe.FindStringSubmatch(rest); m != nil {
			layerPrefix = "layers." + m[1] + "."
			sub = m[2]
		}
		base := func(s string) string { return "language_model.model." + layerPrefix + s }
		switch {
		case sub == "mlp.experts.gate_up_proj":
			if len(shape) != 3 || shape[1]%2 != 0 {
				return nil, fmt.Errorf("%w: %s has shape %v, want [E, 2I, H]", ErrSource, name, shape)
			}
			e, i2, h := int(shape[0]), int(shape[1]), int(shape[2])
			i := i2 / 2
			for k, proj := range []string{"gate_proj", "up_proj"} {
				src := matrixSource{Rows: e * i, Cols: h}
				for x := 0; x < e; x++ {
					src.Parts = append(src.Parts, part{Src: name, Out: x * i, Row: x*i2 + k*i, N: i})
				}
				if err := p.addModule(base("mlp.switch_mlp."+proj), []int64{int64(e), int64(i), int64(h)}, src, opt.Bits, opt); err != nil {
					return nil, err
				}
			}
		case sub == "mlp.experts.down_proj":
			if len(shape) != 3 {
				return nil, fmt.Errorf("%w: %s has shape %v, want [E, H, I]", ErrSource, name, shape)
			}
			src := matrixSource{Rows: int(shape[0] * shape[1]), Cols: int(shape[2])}
			src.Parts = []part{{Src: name, N: src.Rows}}
			if err := p.addModule(base("mlp.switch_mlp.down_proj"), slices.Clone(shape), src, opt.Bits, opt); err != nil {
				return nil, err
			}
		case perExpert.MatchString(sub):
			m := perExpert.FindStringSubmatch(sub)
			idx, _ := strconv.Atoi(m[1])
			if len(shape) != 2 {
				return nil, fmt.Errorf("%w: %s has shape %v, want 2-D", ErrSource, name, shape)
			}
			mod := base("mlp.switch_mlp." + m[2] + "_proj")
			st := stacked[mod]
			if st == nil {
				st = &expertSet{shape: shape}
				stacked[mod] = st
			}
			if !slices.Equal(st.shape, shape) {
				return nil, fmt.Errorf("%w: %s has shape %v, other experts %v", ErrSource, name, shape, st.shape)
			}
			st.parts = append(st.parts, part{Src: name, Out: idx, N: int(shape[0])})
		case strings.HasSuffix(sub, "conv1d.weight"):
			if len(shape) != 3 || shape[1] != 1 {
				return nil, fmt.Errorf("%w: %s has shape %v, want HF's [C, 1, K]", ErrSource, name, shape)
			}
			p.Dense = append(p.Dense, &Dense{Name: outName(rest), Src: name, Shape: []int64{shape[0], shape[2], 1}, DType: formats.BF16, tr: castBF16})
		case strings.HasSuffix(sub, "A_log"):
			p.Dense = append(p.Dense, &Dense{Name: outName(rest), Src: name, Shape: slices.Clone(shape), tr: keep})
		case sub == "input_layernorm.weight" || sub == "post_attention_layernorm.weight" || rest == "norm.weight" ||
			sub == "self_attn.q_norm.weight" || sub == "self_attn.k_norm.weight":
			p.Dense = append(p.Dense, &Dense{Name: outName(rest), Src: name, Shape: slices.Clone(shape), DType: formats.BF16, tr: plusOne})
		case len(shape) == 2 && strings.HasSuffix(rest, ".weight") && int(shape[1])%opt.GroupSize == 0:
			bits := opt.Bits
			if sub == "mlp.gate.weight" || sub == "mlp.shared_expert_gate.weight" {
				bits = opt.GateBits
			}
			src := matrixSource{Rows: int(shape[0]), Cols: int(shape[1]), Parts: []part{{Src: name, N: int(shape[0])}}}
			if err := p.addModule(strings.TrimSuffix(outName(rest), ".weight"), slices.Clone(shape), src, bits, opt); err != nil {
				return nil, err
			}
		default:
			p.Dense = append(p.Dense, &Dense{Name: outName(rest), Src: name, Shape: slices.Clone(shape), DType: formats.BF16, tr: castBF16})
		}
	}
	mods := make([]string, 0, len(stacked))
	for m := range stacked {
		mods = append(mods, m)
	}
	sort.Strings(mods)
	for _, mod := range mods {
		st := stacked[mod]
		sort.Slice(st.parts, func(a, b int) bool { return st.parts[a].Out < st.parts[b].Out })
		out, in := int(st.shape[0]), int(st.shape[1])
		for k := range st.parts {
			if st.parts[k].Out != k {
				return nil, fmt.Errorf("%w: %s: expert %d missing (have %d experts)", ErrSource, mod, k, len(st.parts))
			}
			st.parts[k].Out = k * out
		}
		src := matrixSource{Rows: len(st.parts) * out, Cols: in, Parts: st.parts}
		if err := p.addModule(mod, []int64{int64(len(st.parts)), int64(out), int64(in)}, src, opt.Bits, opt); err != nil {
			return nil, err
		}
	}
	if cfg != nil {
		if err := p.check(cfg); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *Plan) addModule(name string, shape []int64, src matrixSource, bits int, opt Options) error {
	if src.Cols%opt.GroupSize != 0 {
		return fmt.Errorf("%w: %s: input dimension %d not divisible by group size %d", ErrSource, name, src.Cols, opt.GroupSize)
	}
	p.Modules = append(p.Modules, &Module{Name: name, Shape: shape, Bits: bits, GroupSize: opt.GroupSize, src: src})
	if bits != opt.Bits {
		p.Overrides[name] = &formats.QuantSpec{GroupSize: opt.GroupSize, Bits: bits}
	}
	return nil
}

// check compares the routed experts with the config.
func (p *Plan) check(cfg *formats.Config) error {
	for _, m := range p.Modules {
		if !strings.Contains(m.Name, ".switch_mlp.") {
			continue
		}
		if int(m.Shape[0]) != cfg.NumExperts {
			return fmt.Errorf("%w: %s has %d experts, config.json says %d", ErrSource, m.Name, m.Shape[0], cfg.NumExperts)
		}
		want := []int64{int64(cfg.NumExperts), int64(cfg.MoEIntermediateSize), int64(cfg.HiddenSize)}
		if strings.HasSuffix(m.Name, "down_proj") {
			want[1], want[2] = want[2], want[1]
		}
		if !slices.Equal(m.Shape, want) {
			return fmt.Errorf("%w: %s has shape %v, config.json implies %v", ErrSource, m.Name, m.Shape, want)
		}
	}
	return nil
}
