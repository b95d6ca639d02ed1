package pack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/hfconv"
	"github.com/fmoe/fmoe/internal/filecopy"
	"github.com/fmoe/fmoe/internal/progress"
	"golang.org/x/sync/errgroup"
)

// Findings. Each is an error naming one file; Verify returns them all.

// Missing: an expected file is absent.
type Missing struct{ File string }

// Extra: a file nobody expects (including temporary files left by a killed run).
type Extra struct{ File string }

// SizeMismatch: a file's size differs from the recorded one (Truncated when smaller).
type SizeMismatch struct {
	File       string
	Size, Want int64
}

// Corrupt: a file's content does not hash to the recorded checksum, or a
// metadata file cannot be parsed.
type Corrupt struct {
	File       string
	Hash, Want string
	Reason     string
}

// Unrecorded: a data file the layout expects exists but checksums.json has no entry for it.
type Unrecorded struct{ File string }

// ContentMismatch: a packed expert component differs from the source tensor slice (--against).
type ContentMismatch struct {
	File      string
	Layer     int
	Expert    int
	Component string // e.g. "up_proj.scales"
	Tensor    string // source tensor name
}

func (f *Missing) Error() string { return f.File + ": missing" }
func (f *Extra) Error() string   { return f.File + ": extra file (not in layout.json or checksums.json)" }
func (f *SizeMismatch) Error() string {
	what := "size mismatch"
	if f.Size < f.Want {
		what = "truncated"
	}
	return fmt.Sprintf("%s: %s: %d bytes, want %d", f.File, what, f.Size, f.Want)
}
func (f *Corrupt) Error() string {
	if f.Reason != "" {
		return f.File + ": corrupt: " + f.Reason
	}
	return fmt.Sprintf("%s: corrupt: %s %s, want %s", f.File, filecopy.Algorithm, f.Hash, f.Want)
}
func (f *Unrecorded) Error() string {
	return f.File + ": no checksum recorded (interrupted run? re-run to resume)"
}
func (f *ContentMismatch) Error() string {
	return fmt.Sprintf("%s: layer %d expert %d %s differs from the source tensor %s", f.File, f.Layer, f.Expert, f.Component, f.Tensor)
}

// VerifyOptions tunes Verify.
type VerifyOptions struct {
	Against string // source checkpoint directory to compare packed experts with ("" = none)
	Jobs    int    // files checked concurrently (0: default)
}

// Verify checks the directory dir (packed experts, or a model directory
// written by extract): every file in checksums.json, and every data file of
// layout.json when present, must exist with the recorded size and hash; no
// other regular files may be present. With opt.Against it also compares
// every packed expert component with its source tensor. Findings are
// returned sorted by file; err is for failures that stop the check (dir
// unreadable, source checkpoint unusable, cancellation). c counts bytes
// read.
func Verify(ctx context.Context, dir string, opt VerifyOptions, c progress.Counter) (findings []error, err error) {
	c = progress.Or(c)
	jobs := opt.Jobs
	if jobs <= 0 {
		jobs = filecopy.Options{}.Jobs
		if jobs <= 0 {
			jobs = 8
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var mu sync.Mutex
	add := func(f error) {
		mu.Lock()
		findings = append(findings, f)
		mu.Unlock()
	}
	expected := map[string]int64{} // name → size from layout (-1 unknown)
	sums, err := ReadChecksums(dir)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		add(&Missing{File: ChecksumsFile})
	default:
		add(&Corrupt{File: ChecksumsFile, Reason: err.Error()})
	}
	if sums != nil {
		for name := range sums.Files {
			expected[name] = -1
		}
	}
	layout, err := ReadLayout(dir)
	switch {
	case err == nil:
		expected[LayoutFile] = -1
		for _, f := range layout.Files() {
			expected[f] = layout.FileSize()
		}
	case errors.Is(err, fs.ErrNotExist):
		if _, recorded := expected[LayoutFile]; recorded {
			layout = nil // reported as Missing below
		}
	default:
		add(&Corrupt{File: LayoutFile, Reason: err.Error()})
		delete(expected, LayoutFile)
		layout = nil
	}
	present := map[string]int64{}
	for _, e := range entries {
		if e.Name() == ChecksumsFile {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if e.IsDir() {
			continue // e.g. packed_experts/ inside a model directory
		}
		present[e.Name()] = info.Size()
		if _, ok := expected[e.Name()]; !ok {
			add(&Extra{File: e.Name()})
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for name, layoutSize := range expected {
		size, ok := present[name]
		if !ok {
			add(&Missing{File: name})
			continue
		}
		var rec FileSum
		recorded := false
		if sums != nil {
			rec, recorded = sums.Get(name)
		}
		want := layoutSize
		if recorded {
			want = rec.Size
		}
		if want >= 0 && size != want {
			add(&SizeMismatch{File: name, Size: size, Want: want})
			continue
		}
		if !recorded {
			add(&Unrecorded{File: name})
			continue
		}
		g.Go(func() error {
			_, h, err := filecopy.HashFile(gctx, filepath.Join(dir, name), c)
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				add(&Corrupt{File: name, Reason: err.Error()})
				return nil
			}
			if got := filecopy.FormatHash(h); got != rec.Hash {
				add(&Corrupt{File: name, Hash: got, Want: rec.Hash})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if opt.Against != "" {
		if layout == nil {
			return nil, fmt.Errorf("verify --against: %s has no usable %s", dir, LayoutFile)
		}
		if err := against(ctx, dir, opt.Against, layout, present, jobs, c, add); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(findings, func(i, j int) bool { return fileOf(findings[i]) < fileOf(findings[j]) })
	return findings, nil
}

func fileOf(err error) string {
	var (
		m  *Missing
		e  *Extra
		s  *SizeMismatch
		c  *Corrupt
		u  *Unrecorded
		cm *ContentMismatch
	)
	switch {
	case errors.As(err, &m):
		return m.File
	case errors.As(err, &e):
		return e.File
	case errors.As(err, &s):
		return s.File
	case errors.As(err, &c):
		return c.File
	case errors.As(err, &u):
		return u.File
	case errors.As(err, &cm):
		return cm.File
	}
	return ""
}

// against compares every packed component present in dir with the source.
func against(ctx context.Context, dir, src string, layout *formats.PackLayout, present map[string]int64, jobs int, c progress.Counter, add func(error)) error {
	ck, _, err := hfconv.Open(src, hfconv.Options{Bits: layout.Expert.Bits, GroupSize: layout.Expert.GroupSize})
	if err != nil {
		return fmt.Errorf("verify --against: %w", err)
	}
	defer ck.Close()
	p, err := PlanPack(ck.Tensors, ck.Config, Options{Bits: layout.Expert.Bits, Layout: layout.Layout, Layers: layout.Layers})
	if err != nil {
		return fmt.Errorf("verify --against %s: %w", src, err)
	}
	if !p.Layout.Expert.Equal(&layout.Expert) || p.Layout.NumExperts != layout.NumExperts {
		return fmt.Errorf("verify --against %s: the source's expert layout differs from %s", src, filepath.Join(dir, LayoutFile))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for i, o := range p.Outputs {
		if size, ok := present[o.Name]; !ok || size != o.Size {
			continue // already reported as missing or wrong size
		}
		g.Go(func() error {
			f, err := os.Open(filepath.Join(dir, o.Name))
			if err != nil {
				add(&Corrupt{File: o.Name, Reason: err.Error()})
				return nil
			}
			defer f.Close()
			var a, b []byte
			comps := layout.Expert.Components
			for k, pc := range o.Pieces {
				if err := gctx.Err(); err != nil {
					return err
				}
				if int64(cap(a)) < pc.Len {
					a, b = make([]byte, pc.Len), make([]byte, pc.Len)
				}
				a, b = a[:pc.Len], b[:pc.Len]
				r, err := ck.ReaderAt(p.Sources[pc.Src])
				if err != nil {
					return err
				}
				if _, err := r.ReadAt(a, pc.SrcOff); err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("verify --against: read %s: %w", pc.Label, err)
				}
				if _, err := f.ReadAt(b, pc.Dst); err != nil && !errors.Is(err, io.EOF) {
					add(&Corrupt{File: o.Name, Reason: err.Error()})
					return nil
				}
				c.Add(2 * pc.Len)
				if !bytes.Equal(a, b) {
					ex := p.Experts[i][k/len(comps)]
					add(&ContentMismatch{File: o.Name, Layer: ex.Layer, Expert: ex.Expert, Component: comps[k%len(comps)].Name, Tensor: p.Tensors[i][k]})
				}
			}
			return nil
		})
	}
	return g.Wait()
}
