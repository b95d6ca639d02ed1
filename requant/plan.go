package requant

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/fmoe/fmoe/formats"
)

// LayoutFile is the name of the layout description in a packed-expert
// directory.
const LayoutFile = "layout.json"

// Options configures Run.
type Options struct {
	In, Out string // 4-bit packed-expert directory in, 2-bit directory out
	Layers  []int  // layers to convert; nil: every layer of the input
	Method  Method // MinMax (default) or MSE
	Jobs    int    // worker goroutines; 0: all cores
	Force   bool   // redo outputs a previous run finished
}

// outFile is one output file and the experts it holds.
type outFile struct {
	name    string // in the output directory
	src     string // input path
	srcOff  int64  // offset of the first expert in src
	dstSize int64
	layer   int // index into plan.layers
	expert0 int // first expert
	experts int
}

// plan fixes every input and output before any byte is written.
type plan struct {
	in, out   *formats.PackLayout
	ein, eout *expertShape
	layers    []int // layer numbers, ascending
	files     []outFile
}

// loadLayout reads and validates dir/layout.json.
func loadLayout(dir string) (*formats.PackLayout, error) {
	path := filepath.Join(dir, LayoutFile)
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s: %w", ErrLayout, path, err)
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	p, err := formats.ParsePackLayout(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrLayout, path, err)
	}
	return p, nil
}

// makePlan reads the input layout, checks every input file's size and fixes
// the output layout and files. It writes nothing.
func makePlan(opt *Options) (*plan, error) {
	if opt.In == "" || opt.Out == "" {
		return nil, fmt.Errorf("%w: input and output directories are required", ErrUsage)
	}
	if opt.Method == "" {
		opt.Method = MinMax
	}
	if _, err := ParseMethod(string(opt.Method)); err != nil {
		return nil, err
	}
	if opt.Jobs <= 0 {
		opt.Jobs = runtime.GOMAXPROCS(0)
	}
	if same, err := sameDir(opt.In, opt.Out); err != nil {
		return nil, err
	} else if same {
		return nil, fmt.Errorf("%w: %s is the input directory", ErrOutput, opt.Out)
	}
	in, err := loadLayout(opt.In)
	if err != nil {
		return nil, err
	}
	lpath := filepath.Join(opt.In, LayoutFile)
	if in.Expert.Bits != 4 {
		return nil, fmt.Errorf("%w: %s says %d-bit experts", ErrNot4Bit, lpath, in.Expert.Bits)
	}
	layers := in.Layers
	if opt.Layers != nil {
		layers = slices.Clone(opt.Layers)
		slices.Sort(layers)
		layers = slices.Compact(layers)
		for _, l := range layers {
			if !slices.Contains(in.Layers, l) {
				return nil, fmt.Errorf("%w: layer %d is not in %s (layers %v)", ErrUsage, l, lpath, in.Layers)
			}
		}
	}
	if len(layers) == 0 {
		return nil, fmt.Errorf("%w: %s lists no layers", ErrLayout, lpath)
	}
	el, err := formats.NewExpertLayout(in.Expert.Hidden, in.Expert.Intermediate, 2, in.Expert.GroupSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: no 2-bit layout for these experts: %w", ErrLayout, lpath, err)
	}
	out := &formats.PackLayout{Format: formats.PackFormat, Layout: in.Layout, NumLayers: in.NumLayers,
		NumExperts: in.NumExperts, Layers: layers, Expert: *el, Checksums: checksumsFile}
	p := &plan{in: in, out: out, layers: layers}
	if p.ein, p.eout, err = pair(&in.Expert, &out.Expert); err != nil {
		return nil, fmt.Errorf("%s: %w", lpath, err)
	}
	if p.ein.group%16 != 0 {
		return nil, fmt.Errorf("%w: %s: group size %d is not a multiple of 16", ErrShape, lpath, p.ein.group)
	}
	perFile := in.NumExperts
	if in.Layout == formats.PackLayoutExpert {
		perFile = 1
	}
	for li, l := range layers {
		for e := 0; e < in.NumExperts; e += perFile {
			src, off := in.ExpertFile(l, e)
			dst, _ := out.ExpertFile(l, e)
			f := outFile{name: dst, src: filepath.Join(opt.In, src), srcOff: off, dstSize: int64(perFile) * el.Size,
				layer: li, expert0: e, experts: perFile}
			if err := checkSource(f.src, in.FileSize()); err != nil {
				return nil, err
			}
			p.files = append(p.files, f)
		}
	}
	return p, nil
}

// checkSource fails unless path is a regular file of exactly size bytes.
func checkSource(path string, size int64) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("requant: input %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrSize, path)
	}
	if fi.Size() != size {
		what := "truncated"
		if fi.Size() > size {
			what = "too long"
		}
		return fmt.Errorf("%w: %s is %s: %d bytes, the layout needs %d", ErrSize, path, what, fi.Size(), size)
	}
	return nil
}

// sameDir reports whether a and b name the same directory (b may not exist).
func sameDir(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, fmt.Errorf("requant: input directory: %w", err)
	}
	fb, err := os.Stat(b)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("requant: output directory: %w", err)
	}
	return os.SameFile(fa, fb), nil
}

// inputBytes is the number of 4-bit bytes the plan reads.
func (p *plan) inputBytes() int64 {
	var n int64
	for _, f := range p.files {
		n += int64(f.experts) * p.ein.size
	}
	return n
}

// InputBytes returns how many 4-bit bytes Run(opt) will read (for a progress
// total). It checks the input like Run does and writes nothing.
func InputBytes(opt Options) (int64, error) {
	p, err := makePlan(&opt)
	if err != nil {
		return 0, err
	}
	return p.inputBytes(), nil
}
