package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fmoe/fmoe/formats"
)

// Sentinel errors of the engine.
var (
	// ErrModel reports missing, corrupt or inconsistent model files.
	ErrModel = errors.New("runtime: bad model")
	// ErrExperts reports missing, mis-sized or inconsistent expert files.
	ErrExperts = errors.New("runtime: bad expert files")
	// ErrContext reports a sequence longer than the context limit.
	ErrContext = errors.New("runtime: context limit exceeded")
)

// File names inside a model directory.
const (
	WeightsJSON       = "model_weights.json"
	WeightsBin        = "model_weights.bin"
	ExpertsDir4       = "packed_experts"
	ExpertsDir2       = "packed_experts_2bit"
	LayoutJSON        = "layout.json"
	defaultMaxContext = 4096
	defaultBatch      = 32
)

// Options configure Open.
type Options struct {
	Backend         Backend // required; the Model uses it but does not own it
	ExpertsDir      string  // default <modelDir>/packed_experts (or _2bit with TwoBit)
	TwoBit          bool    // use packed_experts_2bit
	ExpertsPerToken int     // 0 = the config's num_experts_per_tok
	MaxContext      int     // tokens per sequence; 0 = 4096
	Batch           int     // prefill tokens per forward call; 0 = the backend's PrefillBatch, else 32
	DirectIO        bool    // bypass the page cache when reading experts (linux)
	IOThreads       int     // parallel expert reads; 0 = 8
	// Experts replaces the file expert source (tests, benchmarks).
	Experts ExpertSource
}

// Model is an opened model: config, resident non-expert weights, an expert
// source. Sequences run in Sessions.
type Model struct {
	Config  *formats.Config
	Dir     string
	TopK    int
	backend Backend
	opts    Options
	experts ExpertSource
	closers []func() error

	embed, lmHead, finalNorm Weight
	layers                   []layer
	attn                     AttentionParams
	delta                    DeltaParams
}

// layer holds one decoder layer's resident weights.
type layer struct {
	full                 bool
	inNorm, postNorm     Weight
	q, k, v, o           Weight // full attention
	qNorm, kNorm         Weight
	qkv, z, b, a, out    Weight // GatedDeltaNet
	conv, dtBias, aLog   Weight
	norm                 Weight
	router               Weight
	shGate, shUp, shDown Weight // shared expert (nil when absent)
	shExpertGate         Weight
}

// Backend returns the backend the model runs on.
func (m *Model) Backend() Backend { return m.backend }

// Experts returns the model's expert source.
func (m *Model) Experts() ExpertSource { return m.experts }

// Batch is the number of prompt tokens a forward step takes (Options.Batch,
// or its default).
func (m *Model) Batch() int { return m.opts.Batch }

// Close releases the mapping and expert files (not the backend).
func (m *Model) Close() error {
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i]())
	}
	m.closers = nil
	return errors.Join(errs...)
}

// Open loads the model in dir: model_weights.json and .bin (mapped read-only),
// every non-expert weight into opts.Backend, and the expert source.
func Open(ctx context.Context, dir string, opts Options) (*Model, error) {
	m, err := open(ctx, dir, opts)
	if err != nil {
		if m != nil {
			m.Close()
		}
		return m, err
	}
	return m, nil
}

func open(ctx context.Context, dir string, opts Options) (m *Model, err error) {
	if opts.Backend == nil {
		return nil, errors.New("runtime: Open needs a backend")
	}
	if opts.MaxContext <= 0 {
		opts.MaxContext = defaultMaxContext
	}
	if opts.Batch <= 0 {
		opts.Batch = defaultBatch
		if pb, ok := opts.Backend.(PrefillBatcher); ok && pb.PrefillBatch() > 0 {
			opts.Batch = pb.PrefillBatch()
		}
	}
	if opts.IOThreads <= 0 {
		opts.IOThreads = 8
	}
	m = &Model{Dir: dir, backend: opts.Backend, opts: opts}
	js, err := os.ReadFile(filepath.Join(dir, WeightsJSON))
	if err != nil {
		return m, fmt.Errorf("%w: %w", ErrModel, err)
	}
	man, err := formats.ParseManifest(js)
	if err != nil {
		return m, fmt.Errorf("%w: %s: %w", ErrModel, filepath.Join(dir, WeightsJSON), err)
	}
	cfg, err := formats.ConfigFromManifest(man)
	if err != nil {
		return m, fmt.Errorf("%w: %s: %w", ErrModel, filepath.Join(dir, WeightsJSON), err)
	}
	m.Config = cfg
	m.TopK = cfg.NumExpertsPerTok
	if opts.ExpertsPerToken > 0 {
		if opts.ExpertsPerToken > cfg.NumExperts {
			return m, fmt.Errorf("%w: %d experts per token but the model has %d", ErrModel, opts.ExpertsPerToken, cfg.NumExperts)
		}
		m.TopK = opts.ExpertsPerToken
	}

	binPath := filepath.Join(dir, WeightsBin)
	f, err := os.Open(binPath)
	if err != nil {
		return m, fmt.Errorf("%w: %w", ErrModel, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return m, fmt.Errorf("%w: %w", ErrModel, err)
	}
	if end := man.End(); st.Size() < end {
		f.Close()
		return m, fmt.Errorf("%w: %s is %d bytes but the manifest needs %d (truncated?)", ErrModel, binPath, st.Size(), end)
	}
	data, release, err := mapFile(f, st.Size())
	f.Close()
	if err != nil {
		return m, fmt.Errorf("%w: mapping %s: %w", ErrModel, binPath, err)
	}
	m.closers = append(m.closers, release)

	ld := &loader{man: man, data: data, be: opts.Backend, cfg: cfg}
	if err := m.loadWeights(ctx, ld); err != nil {
		return m, err
	}
	if opts.Experts != nil {
		m.experts = opts.Experts
	} else {
		edir := opts.ExpertsDir
		if edir == "" {
			edir = filepath.Join(dir, ExpertsDir4)
			if opts.TwoBit {
				edir = filepath.Join(dir, ExpertsDir2)
			}
		}
		fe, err := OpenExperts(edir, cfg, FileExpertsOptions{DirectIO: opts.DirectIO, Parallel: opts.IOThreads})
		if err != nil {
			return m, err
		}
		m.closers = append(m.closers, fe.Close)
		m.experts = fe
	}
	lay := m.experts.Layout()
	if lay.Hidden != cfg.HiddenSize || lay.Intermediate != cfg.MoEIntermediateSize {
		return m, fmt.Errorf("%w: experts are %dx%d, the config says hidden %d, moe_intermediate_size %d",
			ErrExperts, lay.Hidden, lay.Intermediate, cfg.HiddenSize, cfg.MoEIntermediateSize)
	}
	return m, nil
}

func (m *Model) loadWeights(ctx context.Context, ld *loader) error {
	c := m.Config
	H := c.HiddenSize
	var err error
	if m.embed, err = ld.matrix("model.embed_tokens", c.VocabSize, H); err != nil {
		return err
	}
	if c.TieWordEmbeddings && !ld.has("lm_head.weight") {
		m.lmHead = m.embed
	} else if m.lmHead, err = ld.matrix("lm_head", c.VocabSize, H); err != nil {
		return err
	}
	if m.finalNorm, err = ld.vector("model.norm.weight", H); err != nil {
		return err
	}
	m.attn = AttentionParams{Heads: c.NumAttentionHeads, KVHeads: c.NumKeyValueHeads, HeadDim: c.HeadDim,
		RotaryDim: c.RotaryDim(), RopeTheta: c.RopeTheta, Eps: float32(c.RMSNormEps)}
	m.delta = DeltaParams{KeyHeads: c.LinearNumKeyHeads, ValueHeads: c.LinearNumValueHeads,
		KeyDim: c.LinearKeyHeadDim, ValueDim: c.LinearValueHeadDim, ConvKernel: c.LinearConvKernelDim,
		Eps: float32(c.RMSNormEps)}
	m.layers = make([]layer, c.NumHiddenLayers)
	for i := range m.layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := m.loadLayer(ld, i); err != nil {
			return err
		}
	}
	return nil
}

func (m *Model) loadLayer(ld *loader, i int) error {
	c := m.Config
	H := c.HiddenSize
	L := &m.layers[i]
	p := fmt.Sprintf("model.layers.%d.", i)
	L.full = c.IsFullAttention(i)
	var errs []error
	mat := func(dst *Weight, name string, out, in int) {
		w, err := ld.matrix(p+name, out, in)
		*dst = w
		errs = append(errs, err)
	}
	vec := func(dst *Weight, name string, n int) {
		w, err := ld.vector(p+name, n)
		*dst = w
		errs = append(errs, err)
	}
	vec(&L.inNorm, "input_layernorm.weight", H)
	vec(&L.postNorm, "post_attention_layernorm.weight", H)
	if L.full {
		a := m.attn
		mat(&L.q, "self_attn.q_proj", a.Heads*2*a.HeadDim, H)
		mat(&L.k, "self_attn.k_proj", a.KVHeads*a.HeadDim, H)
		mat(&L.v, "self_attn.v_proj", a.KVHeads*a.HeadDim, H)
		mat(&L.o, "self_attn.o_proj", H, a.Heads*a.HeadDim)
		vec(&L.qNorm, "self_attn.q_norm.weight", a.HeadDim)
		vec(&L.kNorm, "self_attn.k_norm.weight", a.HeadDim)
	} else {
		d := m.delta
		vd := d.ValueHeads * d.ValueDim
		mat(&L.qkv, "linear_attn.in_proj_qkv", d.ConvDim(), H)
		mat(&L.z, "linear_attn.in_proj_z", vd, H)
		mat(&L.b, "linear_attn.in_proj_b", d.ValueHeads, H)
		mat(&L.a, "linear_attn.in_proj_a", d.ValueHeads, H)
		mat(&L.out, "linear_attn.out_proj", H, vd)
		w, err := ld.dense(p+"linear_attn.conv1d.weight", d.ConvDim(), d.ConvKernel)
		L.conv = w
		errs = append(errs, err)
		vec(&L.dtBias, "linear_attn.dt_bias", d.ValueHeads)
		vec(&L.aLog, "linear_attn.A_log", d.ValueHeads)
		vec(&L.norm, "linear_attn.norm.weight", d.ValueDim)
	}
	mat(&L.router, "mlp.gate", c.NumExperts, H)
	if si := c.SharedExpertIntermediateSize; si > 0 {
		mat(&L.shGate, "mlp.shared_expert.gate_proj", si, H)
		mat(&L.shUp, "mlp.shared_expert.up_proj", si, H)
		mat(&L.shDown, "mlp.shared_expert.down_proj", H, si)
		mat(&L.shExpertGate, "mlp.shared_expert_gate", 1, H)
	}
	return errors.Join(errs...)
}

// readWhole reads a file into memory (the no-mmap fallback).
func readWhole(f *os.File, size int64) ([]byte, func() error, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, size), b); err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}
