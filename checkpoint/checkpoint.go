package checkpoint

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fmoe/fmoe/formats"
)

// File names inside a checkpoint directory.
const (
	ConfigFile = "config.json"
	SingleFile = "model.safetensors"
	IndexFile  = "model.safetensors.index.json"
)

// Sentinel errors (safetensors and config problems wrap the formats ones).
var (
	// ErrNoWeights: neither model.safetensors nor an index nor any
	// *.safetensors file is present.
	ErrNoWeights = errors.New("checkpoint: no safetensors weights")
	// ErrMissingShard: a shard named in the index does not exist.
	ErrMissingShard = errors.New("checkpoint: shard missing")
	// ErrMissingTensor: a tensor is absent from the shard the index names,
	// or a module lacks a tensor it needs.
	ErrMissingTensor = errors.New("checkpoint: tensor missing")
	// ErrDuplicate: the same tensor appears in two shards.
	ErrDuplicate = errors.New("checkpoint: tensor in two shards")
)

// Ref locates a tensor: the shard file (name relative to the directory) and
// its position in it.
type Ref struct {
	File string
	Info formats.TensorInfo
}

// Checkpoint is an open checkpoint directory.
type Checkpoint struct {
	Dir     string
	Config  *formats.Config
	Tensors map[string]Ref
	Files   []string // shard names, sorted
	files   map[string]*os.File
	sizes   map[string]int64
	virtual map[string]io.ReaderAt // computed files (see NewVirtual)
	closers []io.Closer            // closed with the checkpoint (see NewVirtual)
}

// Open reads config.json and the safetensors headers of dir. The shard files
// stay open (read-only) until Close.
func Open(dir string) (_ *Checkpoint, err error) {
	cfgData, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	cfg, err := formats.ParseConfig(cfgData)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	c := &Checkpoint{Dir: dir, Config: cfg, Tensors: map[string]Ref{}, files: map[string]*os.File{}, sizes: map[string]int64{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	idxPath := filepath.Join(dir, IndexFile)
	idxData, err := os.ReadFile(idxPath)
	switch {
	case err == nil:
		return c, c.openIndexed(idxPath, idxData)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	var shards []string
	if _, err := os.Stat(filepath.Join(dir, SingleFile)); err == nil {
		shards = []string{SingleFile}
	} else {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
		for _, m := range matches {
			shards = append(shards, filepath.Base(m))
		}
	}
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w in %s (want %s or %s)", ErrNoWeights, dir, SingleFile, IndexFile)
	}
	sort.Strings(shards)
	for _, s := range shards {
		h, err := c.openShard(s)
		if err != nil {
			return nil, err
		}
		for _, ti := range h.Tensors {
			if prev, dup := c.Tensors[ti.Name]; dup {
				return nil, fmt.Errorf("%w: %q is in %s and %s", ErrDuplicate, ti.Name, prev.File, s)
			}
			c.Tensors[ti.Name] = Ref{File: s, Info: ti}
		}
	}
	return c, nil
}

func (c *Checkpoint) openIndexed(idxPath string, data []byte) error {
	idx, err := formats.ParseSafetensorsIndex(data)
	if err != nil {
		return fmt.Errorf("%s: %w", idxPath, err)
	}
	headers := map[string]*formats.SafetensorsHeader{}
	for _, s := range idx.Shards() {
		h, err := c.openShard(s)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s is named in %s but does not exist", ErrMissingShard, filepath.Join(c.Dir, s), IndexFile)
		}
		if err != nil {
			return err
		}
		headers[s] = h
	}
	names := make([]string, 0, len(idx.WeightMap))
	for n := range idx.WeightMap {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := idx.WeightMap[n]
		ti, ok := headers[s].Tensor(n)
		if !ok {
			return fmt.Errorf("%w: %q is mapped to %s by %s but is not in that file", ErrMissingTensor, n, filepath.Join(c.Dir, s), IndexFile)
		}
		c.Tensors[n] = Ref{File: s, Info: ti}
	}
	return nil
}

func (c *Checkpoint) openShard(name string) (*formats.SafetensorsHeader, error) {
	path := filepath.Join(c.Dir, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	c.files[name] = f
	c.sizes[name] = st.Size()
	c.Files = append(c.Files, name)
	sort.Strings(c.Files)
	h, err := formats.ReadSafetensorsHeader(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// Names returns every tensor name, sorted.
func (c *Checkpoint) Names() []string {
	out := make([]string, 0, len(c.Tensors))
	for n := range c.Tensors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Shapes returns name → shape for every tensor (what pure planners take).
func (c *Checkpoint) Shapes() map[string][]int64 {
	out := make(map[string][]int64, len(c.Tensors))
	for n, r := range c.Tensors {
		out[n] = r.Info.Shape
	}
	return out
}

// ReaderAt returns the open shard file (a name from Files or Ref.File).
func (c *Checkpoint) ReaderAt(file string) (io.ReaderAt, error) {
	if v, ok := c.virtual[file]; ok {
		return v, nil
	}
	f, ok := c.files[file]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a shard of %s", ErrMissingShard, file, c.Dir)
	}
	return f, nil
}

// FileSize returns the size of an open shard.
func (c *Checkpoint) FileSize(file string) int64 { return c.sizes[file] }

// Section returns a reader over the bytes of tensor name.
func (c *Checkpoint) Section(name string) (*io.SectionReader, Ref, error) {
	r, ok := c.Tensors[name]
	if !ok {
		return nil, Ref{}, fmt.Errorf("%w: %q not in %s", ErrMissingTensor, name, c.Dir)
	}
	ra, err := c.ReaderAt(r.File)
	if err != nil {
		return nil, r, err
	}
	return io.NewSectionReader(ra, r.Info.Offset, r.Info.Size), r, nil
}

// ReadTensor reads the whole tensor into memory (for small tensors).
func (c *Checkpoint) ReadTensor(name string) ([]byte, Ref, error) {
	sec, r, err := c.Section(name)
	if err != nil {
		return nil, r, err
	}
	buf := make([]byte, r.Info.Size)
	if _, err := io.ReadFull(sec, buf); err != nil {
		return nil, r, fmt.Errorf("reading %q from %s: %w", name, r.File, err)
	}
	return buf, r, nil
}

// Quant derives the quantization of the MLX module (a tensor path without
// ".weight", e.g. "language_model.model.layers.0.mlp.gate") from the
// shapes of <module>.weight and <module>.scales. inDim is the module's
// logical input dimension when known (0: use the config's group size). A
// module without .scales is not quantized (ok false). When the config's
// quantization block names the module, the shapes must agree with it.
func (c *Checkpoint) Quant(module string, inDim int) (spec formats.QuantSpec, ok bool, err error) {
	w, hasW := c.Tensors[module+".weight"]
	s, hasS := c.Tensors[module+".scales"]
	if !hasW {
		return spec, false, fmt.Errorf("%w: %s.weight", ErrMissingTensor, module)
	}
	if !hasS {
		return spec, false, nil
	}
	if _, hasB := c.Tensors[module+".biases"]; !hasB {
		return spec, false, fmt.Errorf("%w: %s.biases (the module has scales)", ErrMissingTensor, module)
	}
	if w.Info.DType != formats.U32 {
		return spec, false, fmt.Errorf("%w: %s.weight is %s, a quantized weight must be U32", formats.ErrDType, module, w.Info.DType)
	}
	group := 0
	var override *formats.QuantSpec
	overridden := false
	if q := c.Config.Quantization; q != nil {
		group = q.GroupSize
		for _, k := range []string{module, "language_model." + module, StripPrefix(module)} {
			if o, found := q.Overrides[k]; found {
				override, overridden = o, true
				break
			}
		}
		if override != nil {
			group = override.GroupSize
		}
	}
	if overridden && override == nil {
		return spec, false, fmt.Errorf("%w: module %s has scales but config.json says it is not quantized", formats.ErrShape, module)
	}
	spec, err = formats.InferQuant(w.Info.Shape, s.Info.Shape, inDim, group)
	if err != nil {
		return spec, false, fmt.Errorf("module %s: %w", module, err)
	}
	if override != nil && spec != *override {
		return spec, false, fmt.Errorf("%w: module %s: shapes say %d-bit group %d, config.json says %d-bit group %d",
			formats.ErrShape, module, spec.Bits, spec.GroupSize, override.Bits, override.GroupSize)
	}
	return spec, true, nil
}

// Close closes the shard files.
func (c *Checkpoint) Close() error {
	var first error
	for _, f := range c.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	c.files = map[string]*os.File{}
	for _, cl := range c.closers {
		if err := cl.Close(); err != nil && first == nil {
			first = err
		}
	}
	c.closers = nil
	return first
}

// StripPrefix returns name without the MLX "language_model." prefix.
func StripPrefix(name string) string {
	return strings.TrimPrefix(name, "language_model.")
}
