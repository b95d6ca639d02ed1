package formats

import (
	"encoding/json"
	"fmt"
	"slices"
)

// Expert component names, in the order they are packed.
var ExpertComponentNames = []string{
	"gate_proj.weight", "gate_proj.scales", "gate_proj.biases",
	"up_proj.weight", "up_proj.scales", "up_proj.biases",
	"down_proj.weight", "down_proj.scales", "down_proj.biases",
}

// ExpertComponent is one slice of a packed expert.
type ExpertComponent struct {
	Name   string  `json:"name"`
	Offset int64   `json:"offset"` // from the start of the expert block
	Size   int64   `json:"size"`
	Shape  []int64 `json:"shape"`
	DType  string  `json:"dtype"`
}

// ExpertLayout is the byte layout of one packed routed expert: the nine MLX
// tensors of its gate, up and down projections back to back, no padding.
type ExpertLayout struct {
	Bits         int               `json:"bits"`
	GroupSize    int               `json:"group_size"`
	Hidden       int               `json:"hidden"`
	Intermediate int               `json:"intermediate"`
	Size         int64             `json:"expert_size"`
	Components   []ExpertComponent `json:"components"`
}

// NewExpertLayout computes the layout of an expert with the given hidden and
// intermediate sizes at bits ∈ {2,4,8} and group size: gate/up are
// [intermediate, hidden], down is [hidden, intermediate]; each becomes a U32
// weight [out, in·bits/32] and BF16 scales and biases [out, in/group].
func NewExpertLayout(hidden, intermediate, bits, group int) (*ExpertLayout, error) {
	switch bits {
	case 2, 4, 8:
	default:
		return nil, fmt.Errorf("%w: bits = %d, want 2, 4 or 8", ErrLayout, bits)
	}
	if hidden <= 0 || intermediate <= 0 || group <= 0 || hidden > 1<<24 || intermediate > 1<<24 {
		return nil, fmt.Errorf("%w: hidden %d, intermediate %d, group %d", ErrLayout, hidden, intermediate, group)
	}
	per := 32 / bits
	if hidden%group != 0 || intermediate%group != 0 || group%per != 0 {
		return nil, fmt.Errorf("%w: hidden %d and intermediate %d must be multiples of group %d, itself a multiple of %d", ErrLayout, hidden, intermediate, group, per)
	}
	l := &ExpertLayout{Bits: bits, GroupSize: group, Hidden: hidden, Intermediate: intermediate}
	add := func(name string, dt DType, shape ...int64) {
		size, _ := ByteSize(dt, shape) // dims are bounded above
		l.Components = append(l.Components, ExpertComponent{Name: name, Offset: l.Size, Size: size, Shape: shape, DType: string(dt)})
		l.Size += size
	}
	proj := func(name string, out, in int) {
		add(name+".weight", U32, int64(out), int64(in/per))
		add(name+".scales", BF16, int64(out), int64(in/group))
		add(name+".biases", BF16, int64(out), int64(in/group))
	}
	proj("gate_proj", intermediate, hidden)
	proj("up_proj", intermediate, hidden)
	proj("down_proj", hidden, intermediate)
	return l, nil
}

// Component returns the named component ("up_proj.scales", ...).
func (l *ExpertLayout) Component(name string) (ExpertComponent, bool) {
	for _, c := range l.Components {
		if c.Name == name {
			return c, true
		}
	}
	return ExpertComponent{}, false
}

// Equal reports whether two layouts are identical.
func (l *ExpertLayout) Equal(o *ExpertLayout) bool {
	if l.Bits != o.Bits || l.GroupSize != o.GroupSize || l.Hidden != o.Hidden ||
		l.Intermediate != o.Intermediate || l.Size != o.Size || len(l.Components) != len(o.Components) {
		return false
	}
	for i, c := range l.Components {
		d := o.Components[i]
		if c.Name != d.Name || c.Offset != d.Offset || c.Size != d.Size || c.DType != d.DType || !slices.Equal(c.Shape, d.Shape) {
			return false
		}
	}
	return true
}

// Pack layout constants.
const (
	PackFormat       = "fmoe-experts/1"
	PackLayoutLayer  = "layer"  // one file per layer, expert e at e × expert_size
	PackLayoutExpert = "expert" // one file per (layer, expert)
)

// PackLayout is layout.json, written next to packed expert files.
type PackLayout struct {
	Format     string       `json:"format"` // PackFormat
	Layout     string       `json:"layout"` // PackLayoutExpert or PackLayoutLayer
	NumLayers  int          `json:"num_layers"`
	NumExperts int          `json:"num_experts"`
	Layers     []int        `json:"layers"` // layers present, ascending
	Expert     ExpertLayout `json:"expert"`
	Checksums  string       `json:"checksums"` // file name of the checksum manifest
}

// ParsePackLayout parses and checks layout.json: known format and layout,
// layers ascending, unique and below num_layers, an expert layout equal to
// the one NewExpertLayout computes for its dims, and a plain checksum file
// name. Errors wrap ErrLayout.
func ParsePackLayout(data []byte) (*PackLayout, error) {
	var p PackLayout
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLayout, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Validate checks a layout (see ParsePackLayout).
func (p *PackLayout) Validate() error {
	if p.Format != PackFormat {
		return fmt.Errorf("%w: format %q, want %q", ErrLayout, p.Format, PackFormat)
	}
	if p.Layout != PackLayoutExpert && p.Layout != PackLayoutLayer {
		return fmt.Errorf("%w: layout %q, want %q or %q", ErrLayout, p.Layout, PackLayoutExpert, PackLayoutLayer)
	}
	if p.NumLayers <= 0 || p.NumLayers > 1<<16 || p.NumExperts <= 0 || p.NumExperts > 1<<20 {
		return fmt.Errorf("%w: num_layers %d, num_experts %d", ErrLayout, p.NumLayers, p.NumExperts)
	}
	for i, l := range p.Layers {
		if l < 0 || l >= p.NumLayers || (i > 0 && l <= p.Layers[i-1]) {
			return fmt.Errorf("%w: layers must be ascending, unique and in [0,%d): %v", ErrLayout, p.NumLayers, p.Layers)
		}
	}
	want, err := NewExpertLayout(p.Expert.Hidden, p.Expert.Intermediate, p.Expert.Bits, p.Expert.GroupSize)
	if err != nil {
		return err
	}
	if !want.Equal(&p.Expert) {
		return fmt.Errorf("%w: expert components do not match the layout computed for hidden %d, intermediate %d, %d-bit, group %d",
			ErrLayout, p.Expert.Hidden, p.Expert.Intermediate, p.Expert.Bits, p.Expert.GroupSize)
	}
	if p.Checksums != "" && !safeFileName(p.Checksums) {
		return fmt.Errorf("%w: checksums file name %q is not a plain file name", ErrLayout, p.Checksums)
	}
	return nil
}

// ExpertFile returns the file holding (layer, expert) and the byte offset of
// the expert in it: "layer_05_expert_0017.bin", 0 for the expert layout;
// "layer_05.bin", expert × expert_size for the layer layout.
func (p *PackLayout) ExpertFile(layer, expert int) (name string, offset int64) {
	if p.Layout == PackLayoutLayer {
		return fmt.Sprintf("layer_%02d.bin", layer), int64(expert) * p.Expert.Size
	}
	return fmt.Sprintf("layer_%02d_expert_%04d.bin", layer, expert), 0
}

// FileSize returns the size of every data file of this layout.
func (p *PackLayout) FileSize() int64 {
	if p.Layout == PackLayoutLayer {
		return int64(p.NumExperts) * p.Expert.Size
	}
	return p.Expert.Size
}

// Files lists the data files of the layout for its Layers, in order.
func (p *PackLayout) Files() []string {
	var out []string
	for _, l := range p.Layers {
		if p.Layout == PackLayoutLayer {
			n, _ := p.ExpertFile(l, 0)
			out = append(out, n)
			continue
		}
		for e := 0; e < p.NumExperts; e++ {
			n, _ := p.ExpertFile(l, e)
			out = append(out, n)
		}
	}
	return out
}
