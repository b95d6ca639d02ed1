package synth

import (
	"fmt"
	"sort"

	"github.com/fmoe/fmoe/formats"
)

// valueKind says how a module's values are drawn.
type valueKind int

const (
	gaussian valueKind = iota // Mean + Std·N(0,1)
	aLog                      // log(U(1, 16)), the HF initialisation of A_log
	dtBias                    // softplus⁻¹(dt), dt log-uniform in [1e-3, 1e-1]
)

// Module is one generated unit: a quantized MLX module (three tensors
// <Name>.weight/.scales/.biases) or one dense tensor named Name.
type Module struct {
	Name  string
	Shape []int64            // logical (unquantized) shape; the last dim is the input dim
	Quant *formats.QuantSpec // nil: dense
	DType formats.DType      // dense element type (BF16 or F32)
	Kind  valueKind
	Mean  float64
	Std   float64
}

// Rows and Cols of the module seen as a row-major matrix (leading dims
// flattened; stacked experts are consecutive rows).
func (m *Module) Rows() int64 {
	r := int64(1)
	for _, d := range m.Shape[:len(m.Shape)-1] {
		r *= d
	}
	return r
}

// Cols is the last (input) dimension.
func (m *Module) Cols() int64 { return m.Shape[len(m.Shape)-1] }

// Tensors returns the safetensors tensors of the module.
func (m *Module) Tensors() []formats.TensorSpec {
	if m.Quant == nil {
		return []formats.TensorSpec{{Name: m.Name, DType: m.DType, Shape: m.Shape}}
	}
	lead := m.Shape[:len(m.Shape)-1]
	with := func(last int64) []int64 { return append(append([]int64{}, lead...), last) }
	c := m.Cols()
	return []formats.TensorSpec{
		{Name: m.Name + ".biases", DType: formats.BF16, Shape: with(c / int64(m.Quant.GroupSize))},
		{Name: m.Name + ".scales", DType: formats.BF16, Shape: with(c / int64(m.Quant.GroupSize))},
		{Name: m.Name + ".weight", DType: formats.U32, Shape: with(c * int64(m.Quant.Bits) / 32)},
	}
}

// Shard is one safetensors file of the plan.
type Shard struct {
	Name    string
	Modules []int                         // indexes into Plan.Modules
	Prefix  []byte                        // 8-byte length + JSON header
	Tensors map[string]formats.TensorInfo // absolute offsets
	Size    int64
}

// Plan is everything Write does, decided up front.
type Plan struct {
	Options Options
	Modules []Module
	Shards  []Shard
}

// maxShardBytes is mlx-lm's default shard size limit (5 GiB).
const maxShardBytes = 5 << 30

// Modules lists the modules of an MLX Qwen3.5-MoE checkpoint with
// dimensions o, sorted by name.
func Modules(o *Options) []Module {
	var mods []Module
	proj := func(name string, gate bool, std float64, shape ...int64) {
		q := o.quantFor(name, int(shape[len(shape)-1]), gate)
		mods = append(mods, Module{Name: name, Shape: shape, Quant: q, DType: formats.BF16, Kind: gaussian, Std: std})
	}
	dense := func(name string, dt formats.DType, kind valueKind, mean, std float64, shape ...int64) {
		mods = append(mods, Module{Name: name, Shape: shape, DType: dt, Kind: kind, Mean: mean, Std: std})
	}
	norm := func(name string, n int) { dense(name, formats.BF16, gaussian, 1, 0.1, int64(n)) }
	H := int64(o.Hidden)
	const std = 0.02
	proj("language_model.model.embed_tokens", false, std, int64(o.Vocab), H)
	proj("language_model.lm_head", false, std, int64(o.Vocab), H)
	norm("language_model.model.norm.weight", o.Hidden)
	types := o.LayerTypes()
	keyDim, valDim := int64(o.LinearKeyHeads*o.LinearKeyDim), int64(o.LinearValueHeads*o.LinearValueDim)
	for l := 0; l < o.Layers; l++ {
		p := fmt.Sprintf("language_model.model.layers.%d.", l)
		norm(p+"input_layernorm.weight", o.Hidden)
		norm(p+"post_attention_layernorm.weight", o.Hidden)
		if types[l] == formats.FullAttention {
			qd, kd := int64(o.Heads*o.HeadDim), int64(o.KVHeads*o.HeadDim)
			proj(p+"self_attn.q_proj", false, std, 2*qd, H)
			proj(p+"self_attn.k_proj", false, std, kd, H)
			proj(p+"self_attn.v_proj", false, std, kd, H)
			proj(p+"self_attn.o_proj", false, std, H, qd)
			norm(p+"self_attn.q_norm.weight", o.HeadDim)
			norm(p+"self_attn.k_norm.weight", o.HeadDim)
		} else {
			hv := int64(o.LinearValueHeads)
			proj(p+"linear_attn.in_proj_qkv", false, std, 2*keyDim+valDim, H)
			proj(p+"linear_attn.in_proj_z", false, std, valDim, H)
			proj(p+"linear_attn.in_proj_b", false, std, hv, H)
			proj(p+"linear_attn.in_proj_a", false, std, hv, H)
			proj(p+"linear_attn.out_proj", false, std, H, valDim)
			dense(p+"linear_attn.conv1d.weight", formats.BF16, gaussian, 0, 0.3, 2*keyDim+valDim, int64(o.ConvKernel), 1)
			dense(p+"linear_attn.dt_bias", formats.BF16, dtBias, 0, 0, hv)
			dense(p+"linear_attn.A_log", formats.F32, aLog, 0, 0, hv)
			norm(p+"linear_attn.norm.weight", o.LinearValueDim)
		}
		E, I, S := int64(o.Experts), int64(o.Intermediate), int64(o.SharedIntermediate)
		proj(p+"mlp.gate", true, 0.05, E, H)
		proj(p+"mlp.shared_expert_gate", true, std, 1, H)
		proj(p+"mlp.shared_expert.gate_proj", false, std, S, H)
		proj(p+"mlp.shared_expert.up_proj", false, std, S, H)
		proj(p+"mlp.shared_expert.down_proj", false, std, H, S)
		proj(p+"mlp.switch_mlp.gate_proj", false, std, E, I, H)
		proj(p+"mlp.switch_mlp.up_proj", false, std, E, I, H)
		proj(p+"mlp.switch_mlp.down_proj", false, std, E, H, I)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Name < mods[j].Name })
	return mods
}

// NewPlan validates o, lists the modules and lays out the shards: modules in
// name order, cut into o.Shards files of about equal size (0: as many 5 GiB
// files as needed), each module's tensors kept in one file.
func NewPlan(o Options) (*Plan, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{Options: o, Modules: Modules(&o)}
	sizes := make([]int64, len(p.Modules))
	var total int64
	for i := range p.Modules {
		for _, t := range p.Modules[i].Tensors() {
			n, err := formats.ByteSize(t.DType, t.Shape)
			if err != nil {
				return nil, fmt.Errorf("%w: tensor %s: %w", ErrOptions, t.Name, err)
			}
			sizes[i] += n
		}
		total += sizes[i]
	}
	if o.Shards > len(p.Modules) {
		return nil, fmt.Errorf("%w: %d shards for %d modules", ErrOptions, o.Shards, len(p.Modules))
	}
	groups := splitShards(sizes, total, o.Shards)
	n := len(groups)
	for k, g := range groups {
		name := "model.safetensors"
		if n > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", k+1, n)
		}
		var specs []formats.TensorSpec
		for _, i := range g {
			specs = append(specs, p.Modules[i].Tensors()...)
		}
		sort.Slice(specs, func(a, b int) bool { return specs[a].Name < specs[b].Name })
		prefix, infos, err := formats.PlanSafetensors(specs, map[string]string{"format": "mlx"})
		if err != nil {
			return nil, fmt.Errorf("%w: shard %s: %w", ErrOptions, name, err)
		}
		s := Shard{Name: name, Modules: g, Prefix: prefix, Tensors: map[string]formats.TensorInfo{}, Size: int64(len(prefix))}
		for _, ti := range infos {
			s.Tensors[ti.Name] = ti
			s.Size += ti.Size
		}
		p.Shards = append(p.Shards, s)
	}
	return p, nil
}

// splitShards cuts the modules (in order) into shards. With n > 0: n
// shards of about total/n bytes, each non-empty. With n == 0: mlx-lm's rule,
// fill a shard until the next module would push it past maxShardBytes.
func splitShards(sizes []int64, total int64, n int) [][]int {
	if n == 0 {
		var groups [][]int
		var cur []int
		var run int64
		for i, s := range sizes {
			if len(cur) > 0 && run+s > maxShardBytes {
				groups = append(groups, cur)
				cur, run = nil, 0
			}
			cur = append(cur, i)
			run += s
		}
		return append(groups, cur)
	}
	// Shard k ends once the running size passes (k+1)/n of the total,
	// leaving at least one module for each later shard.
	groups := make([][]int, n)
	var run int64
	k := 0
	for i := range sizes {
		groups[k] = append(groups[k], i)
		run += sizes[i]
		left := len(sizes) - i - 1
		if k < n-1 && (run*int64(n) >= total*int64(k+1) || left == n-1-k) {
			k++
		}
	}
	return groups
}

// Bytes is the total size of the shard files.
func (p *Plan) Bytes() int64 {
	var n int64
	for _, s := range p.Shards {
		n += s.Size
	}
	return n
}

// WeightMap returns tensor name → shard name (the index's weight_map).
func (p *Plan) WeightMap() map[string]string {
	m := map[string]string{}
	for _, s := range p.Shards {
		for name := range s.Tensors {
			m[name] = s.Name
		}
	}
	return m
}
