package pack

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/filecopy"
)

// Sentinel errors.
var (
	// ErrBits: --bits differs from the bits of the source expert tensors.
	ErrBits = errors.New("pack: bits do not match the source experts")
	// ErrExpertShape: an expert tensor's shape or dtype is not what config.json implies.
	ErrExpertShape = errors.New("pack: expert tensor inconsistent with config")
	// ErrLayers: a bad --layers specification.
	ErrLayers = errors.New("pack: bad layer list")
)

// LayoutFile is the name of the layout description next to packed experts.
const LayoutFile = "layout.json"

// expertRE matches the stacked routed-expert tensors of an MLX checkpoint.
var expertRE = regexp.MustCompile(`^((?:language_model\.)?model\.layers\.)(\d+)\.mlp\.switch_mlp\.((?:gate|up|down)_proj\.(?:weight|scales|biases))$`)

// ParseLayers parses "0-3,7" (or "all" / "") into ascending unique layers
// below n.
func ParseLayers(spec string, n int) ([]int, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" || spec == "all" {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	set := map[int]bool{}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b, err2 := a, error(nil)
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 0 || b < a {
			return nil, fmt.Errorf("%w: %q in %q (want e.g. 0-3,7)", ErrLayers, part, spec)
		}
		if b >= n {
			return nil, fmt.Errorf("%w: layer %d in %q, the model has layers 0-%d", ErrLayers, b, spec, n-1)
		}
		for l := a; l <= b; l++ {
			set[l] = true
		}
	}
	out := make([]int, 0, len(set))
	for l := range set {
		out = append(out, l)
	}
	sort.Ints(out)
	return out, nil
}

// Options selects what PlanPack packs.
type Options struct {
	Bits int // must equal the source experts' bits (an HF release is quantized to it)
	// GroupSize is the quantization group of an HF release converted on the
	// fly (0: 64); MLX sources keep their own.
	GroupSize int
	Layout    string // formats.PackLayoutExpert (default) or formats.PackLayoutLayer
	Layers    []int  // nil: all layers
}

// ExpertRef names the expert a part of an output holds.
type ExpertRef struct{ Layer, Expert int }

// Plan is a complete packing job: the layout and one copy output per file.
// Sources are shard names relative to the checkpoint directory.
type Plan struct {
	Layout  formats.PackLayout
	Sources []string
	Outputs []filecopy.Output
	// Experts[i] lists the experts of Outputs[i] in file order; output
	// piece k belongs to Experts[i][k/9], component Layout.Expert.Components[k%9].
	Experts [][]ExpertRef
	// Tensors[i][k] is the source tensor name of output i's piece k.
	Tensors [][]string
}

// TotalBytes returns the bytes the plan writes.
func (p *Plan) TotalBytes() int64 {
	var n int64
	for _, o := range p.Outputs {
		n += o.Size
	}
	return n
}

// CopyPlan returns the filecopy plan writing into dir, reading shards from
// the checkpoint directory src.
func (p *Plan) CopyPlan(src, dir string) *filecopy.Plan {
	cp := &filecopy.Plan{Dir: dir, Outputs: p.Outputs}
	for _, s := range p.Sources {
		cp.Sources = append(cp.Sources, filepath.Join(src, s))
	}
	return cp
}

// PlanPack plans packing the routed experts of a checkpoint inventory
// (tensor name → location, as checkpoint.Checkpoint.Tensors) for the model
// described by cfg. It reads nothing but its arguments.
func PlanPack(tensors map[string]checkpoint.Ref, cfg *formats.Config, opt Options) (*Plan, error) {
	if opt.Layout == "" {
		opt.Layout = formats.PackLayoutExpert
	}
	if opt.Layout != formats.PackLayoutExpert && opt.Layout != formats.PackLayoutLayer {
		return nil, fmt.Errorf("pack: layout %q, want %q or %q", opt.Layout, formats.PackLayoutExpert, formats.PackLayoutLayer)
	}
	layers := opt.Layers
	if layers == nil {
		layers, _ = ParseLayers("", cfg.NumHiddenLayers)
	}
	for i, l := range layers {
		if l < 0 || l >= cfg.NumHiddenLayers || (i > 0 && l <= layers[i-1]) {
			return nil, fmt.Errorf("%w: %v (ascending, unique, below %d)", ErrLayers, layers, cfg.NumHiddenLayers)
		}
	}
	// Index the expert tensors: layer → component → name.
	byLayer := map[int]map[string]string{}
	prefix := "model.layers."
	for name := range tensors {
		m := expertRE.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		prefix = m[1]
		l, _ := strconv.Atoi(m[2])
		if byLayer[l] == nil {
			byLayer[l] = map[string]string{}
		}
		byLayer[l][m[3]] = name
	}
	get := func(layer int, comp string) (checkpoint.Ref, string, error) {
		name, ok := byLayer[layer][comp]
		if !ok {
			name = fmt.Sprintf("%s%d.mlp.switch_mlp.%s", prefix, layer, comp)
			return checkpoint.Ref{}, name, fmt.Errorf("%w: %q (layer %d expert %s) not in the checkpoint", checkpoint.ErrMissingTensor, name, layer, comp)
		}
		return tensors[name], name, nil
	}

	// Bits and group size from the first layer's gate_proj shapes.
	if len(layers) == 0 {
		return nil, fmt.Errorf("%w: no layers selected", ErrLayers)
	}
	w, wname, err := get(layers[0], "gate_proj.weight")
	if err != nil {
		return nil, err
	}
	s, _, err := get(layers[0], "gate_proj.scales")
	if err != nil {
		return nil, err
	}
	group := 0
	if cfg.Quantization != nil {
		group = cfg.Quantization.GroupSize
	}
	if len(w.Info.Shape) != 3 || len(s.Info.Shape) != 3 {
		return nil, fmt.Errorf("%w: %s in %s has shape %v, want [num_experts, out, in·bits/32]", ErrExpertShape, wname, w.File, w.Info.Shape)
	}
	q, err := formats.InferQuant(w.Info.Shape[1:], s.Info.Shape[1:], cfg.HiddenSize, group)
	if err != nil {
		return nil, fmt.Errorf("%w: %s in %s: %w", ErrExpertShape, wname, w.File, err)
	}
	if opt.Bits != q.Bits {
		hint := ""
		if opt.Bits < q.Bits {
			hint = fmt.Sprintf("; %d-bit experts come from `fmoe requant`", opt.Bits)
		}
		return nil, fmt.Errorf("%w: --bits %d but %s in %s is %d-bit (shape %v)%s", ErrBits, opt.Bits, wname, w.File, q.Bits, w.Info.Shape, hint)
	}
	el, err := formats.NewExpertLayout(cfg.HiddenSize, cfg.MoEIntermediateSize, q.Bits, q.GroupSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrExpertShape, err)
	}
	E := cfg.NumExperts
	p := &Plan{Layout: formats.PackLayout{Format: formats.PackFormat, Layout: opt.Layout, NumLayers: cfg.NumHiddenLayers,
		NumExperts: E, Layers: slices.Clone(layers), Expert: *el, Checksums: ChecksumsFile}}
	srcIdx := map[string]int{}
	type slice struct {
		ref  checkpoint.Ref
		name string
		src  int
	}
	for _, l := range layers {
		var comps [9]slice
		for ci, c := range el.Components {
			ref, name, err := get(l, c.Name)
			if err != nil {
				return nil, err
			}
			want := append([]int64{int64(E)}, c.Shape...)
			if string(ref.Info.DType) != c.DType || !slices.Equal(ref.Info.Shape, want) {
				return nil, fmt.Errorf("%w: %s in %s is %s %v, want %s %v (num_experts %d, hidden %d, moe_intermediate %d, %d-bit group %d)",
					ErrExpertShape, name, ref.File, ref.Info.DType, ref.Info.Shape, c.DType, want, E, cfg.HiddenSize, cfg.MoEIntermediateSize, q.Bits, q.GroupSize)
			}
			if ref.Info.Size != int64(E)*c.Size {
				return nil, fmt.Errorf("%w: %s in %s spans %d bytes, want %d", ErrExpertShape, name, ref.File, ref.Info.Size, int64(E)*c.Size)
			}
			si, ok := srcIdx[ref.File]
			if !ok {
				si = len(p.Sources)
				srcIdx[ref.File] = si
				p.Sources = append(p.Sources, ref.File)
			}
			comps[ci] = slice{ref, name, si}
		}
		addExpert := func(o *filecopy.Output, names *[]string, refs *[]ExpertRef, e int, base int64) {
			for ci, c := range el.Components {
				sl := comps[ci]
				o.Pieces = append(o.Pieces, filecopy.Piece{Src: sl.src, SrcOff: sl.ref.Info.Offset + int64(e)*c.Size,
					Dst: base + c.Offset, Len: c.Size, Label: fmt.Sprintf("expert %d of %s in %s", e, sl.name, sl.ref.File)})
				*names = append(*names, sl.name)
			}
			*refs = append(*refs, ExpertRef{l, e})
		}
		if opt.Layout == formats.PackLayoutLayer {
			name, _ := p.Layout.ExpertFile(l, 0)
			o := filecopy.Output{Name: name, Size: p.Layout.FileSize()}
			var names []string
			var refs []ExpertRef
			for e := range E {
				_, off := p.Layout.ExpertFile(l, e)
				addExpert(&o, &names, &refs, e, off)
			}
			p.Outputs, p.Tensors, p.Experts = append(p.Outputs, o), append(p.Tensors, names), append(p.Experts, refs)
			continue
		}
		for e := range E {
			name, off := p.Layout.ExpertFile(l, e)
			o := filecopy.Output{Name: name, Size: el.Size}
			var names []string
			var refs []ExpertRef
			addExpert(&o, &names, &refs, e, off)
			p.Outputs, p.Tensors, p.Experts = append(p.Outputs, o), append(p.Tensors, names), append(p.Experts, refs)
		}
	}
	return p, nil
}
