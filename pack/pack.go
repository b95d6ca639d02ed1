package pack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/hfconv"
	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/filecopy"
	"github.com/fmoe/fmoe/internal/progress"
	"golang.org/x/sync/errgroup"
)

// ErrLayoutConflict: the output directory already holds packed experts of a
// different layout.
var ErrLayoutConflict = errors.New("pack: output directory holds a different layout")

// RunOptions tunes Packer.Run.
type RunOptions struct {
	Jobs  int  // workers (0: default)
	Force bool // redo outputs even when complete, replace a different layout
}

// Summary describes a finished pack-experts run.
type Summary struct {
	Out          string  `json:"out"`
	Layout       string  `json:"layout"`
	Bits         int     `json:"bits"`
	Layers       []int   `json:"layers"`
	Files        int     `json:"files"`         // data files planned
	Written      int     `json:"written"`       // data files written this run
	Skipped      int     `json:"skipped"`       // data files already complete
	Bytes        int64   `json:"bytes"`         // bytes written
	BytesSkipped int64   `json:"bytes_skipped"` // bytes of skipped files
	Seconds      float64 `json:"seconds"`
}

// Packer is an opened checkpoint with its packing plan.
type Packer struct {
	Src        string
	Checkpoint *checkpoint.Checkpoint
	Plan       *Plan
}

// Open inventories the checkpoint at src and plans the packing.
func Open(src string, opt Options) (*Packer, error) {
	ck, _, err := hfconv.Open(src, hfconv.Options{Bits: opt.Bits, GroupSize: opt.GroupSize})
	if err != nil {
		return nil, err
	}
	p, err := PlanPack(ck.Tensors, ck.Config, opt)
	if err != nil {
		ck.Close()
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return &Packer{Src: src, Checkpoint: ck, Plan: p}, nil
}

// Close releases the checkpoint.
func (pk *Packer) Close() error { return pk.Checkpoint.Close() }

// TotalBytes is the size of all planned data files.
func (pk *Packer) TotalBytes() int64 { return pk.Plan.TotalBytes() }

// ReadLayout reads dir/layout.json (an error wrapping fs.ErrNotExist when
// absent).
func ReadLayout(dir string) (*formats.PackLayout, error) {
	path := filepath.Join(dir, LayoutFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l, err := formats.ParsePackLayout(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// Run writes the packed experts, layout.json and checksums.json into out
// (created if needed). Outputs that already exist with the size and
// checksum recorded in out/checksums.json are kept unless Force. c counts
// bytes written and bytes of kept files. checksums.json is written even
// when Run fails or is canceled, listing every file finished so far, so a
// re-run resumes.
func (pk *Packer) Run(ctx context.Context, out string, opt RunOptions, c progress.Counter) (_ *Summary, err error) {
	start := time.Now()
	c = progress.Or(c)
	p := pk.Plan
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	layout := p.Layout
	old, err := ReadLayout(out)
	switch {
	case err == nil:
		same := old.Layout == layout.Layout && old.NumLayers == layout.NumLayers &&
			old.NumExperts == layout.NumExperts && old.Expert.Equal(&layout.Expert)
		if !same && !opt.Force {
			return nil, fmt.Errorf("%w: %s is %s layout, %d-bit, %d experts; this run writes %s layout, %d-bit, %d experts (use another directory or --force)",
				ErrLayoutConflict, filepath.Join(out, LayoutFile), old.Layout, old.Expert.Bits, old.NumExperts, layout.Layout, layout.Expert.Bits, layout.NumExperts)
		}
		if same { // packing more layers into the same directory
			layout.Layers = union(old.Layers, layout.Layers)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		if !opt.Force {
			return nil, fmt.Errorf("%w (use --force to replace it)", err)
		}
	}

	prev, _ := ReadChecksums(out)
	sums := NewChecksums()
	if prev != nil {
		for _, f := range layout.Files() { // keep what is still part of the layout
			if s, ok := prev.Get(f); ok {
				sums.Files[f] = s
			}
		}
	}
	ldata, err := json.MarshalIndent(layout, "", "  ")
	if err != nil {
		return nil, err
	}
	ldata = append(ldata, '\n')
	if err := atomicfile.Write(ctx, filepath.Join(out, LayoutFile), 0o644, func(f *os.File) error {
		_, err := f.Write(ldata)
		return err
	}); err != nil {
		return nil, err
	}
	sums.Set(LayoutFile, int64(len(ldata)), filecopy.HashBytes(ldata))
	defer func() {
		// Record what is finished, also after an error or Ctrl-C.
		if werr := sums.Write(context.WithoutCancel(ctx), out); werr != nil && err == nil {
			err = werr
		}
	}()

	s := &Summary{Out: out, Layout: layout.Layout, Bits: layout.Expert.Bits, Layers: p.Layout.Layers, Files: len(p.Outputs)}
	// Resume: check existing outputs in parallel.
	keep := make([]bool, len(p.Outputs))
	if prev != nil && !opt.Force {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(opt.Jobs, 4))
		for i, o := range p.Outputs {
			g.Go(func() error {
				keep[i] = Matches(gctx, prev, out, o.Name, o.Size, nil)
				return gctx.Err()
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	cp := p.CopyPlan(pk.Checkpoint.Dir, out)
	cp.Readers = pk.Checkpoint.Readers(p.Sources)
	todo := cp.Outputs[:0:0]
	for i, o := range cp.Outputs {
		if keep[i] {
			s.Skipped++
			s.BytesSkipped += o.Size
			c.Add(o.Size)
			continue
		}
		todo = append(todo, o)
	}
	cp.Outputs = todo
	err = filecopy.Run(ctx, cp, filecopy.Options{Jobs: opt.Jobs}, c, func(r filecopy.Result) error {
		sums.Set(r.Name, r.Size, r.Hash)
		s.Written++
		s.Bytes += r.Size
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.Seconds = time.Since(start).Seconds()
	return s, nil
}

func union(a, b []int) []int {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	sort.Ints(out)
	return out
}
