package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/fmoe/fmoe/formats"
	"golang.org/x/sync/errgroup"
)

// LayoutFromPack converts a layout.json expert description into the
// runtime's projection offsets, by component name.
func LayoutFromPack(e *formats.ExpertLayout) (ExpertLayout, error) {
	l := ExpertLayout{Size: e.Size, Hidden: e.Hidden, Intermediate: e.Intermediate, GroupSize: e.GroupSize}
	proj := func(name string, out, in int) (ProjLayout, error) {
		p := ProjLayout{Bits: e.Bits, Out: out, In: in}
		for _, part := range []struct {
			suffix    string
			off, size *int64
		}{{".weight", &p.WOffset, &p.WSize}, {".scales", &p.SOffset, &p.SSize}, {".biases", &p.BOffset, &p.BSize}} {
			c, ok := e.Component(name + part.suffix)
			if !ok {
				return p, fmt.Errorf("%w: layout has no component %s%s", ErrExperts, name, part.suffix)
			}
			*part.off, *part.size = c.Offset, c.Size
		}
		return p, nil
	}
	var err error
	if l.Gate, err = proj("gate_proj", e.Intermediate, e.Hidden); err != nil {
		return l, err
	}
	if l.Up, err = proj("up_proj", e.Intermediate, e.Hidden); err != nil {
		return l, err
	}
	if l.Down, err = proj("down_proj", e.Hidden, e.Intermediate); err != nil {
		return l, err
	}
	if err := l.Validate(); err != nil {
		return l, fmt.Errorf("%w: %w", ErrExperts, err)
	}
	return l, nil
}

// FileExpertsOptions configure OpenExperts.
type FileExpertsOptions struct {
	DirectIO bool // open with O_DIRECT (linux) to measure cold reads
	Parallel int  // concurrent preads per ReadExperts call; 0 = 8
}

// FileExperts reads experts from a directory written by `fmoe pack-experts`
// (per-expert or per-layer files, as layout.json says) with parallel pread
// into the caller's buffers.
type FileExperts struct {
	dir    string
	pack   *formats.PackLayout
	layout ExpertLayout
	opts   FileExpertsOptions

	mu    sync.Mutex
	files map[string]*os.File // per-layer files stay open
}

// OpenExperts opens an expert directory and checks it against cfg: layer and
// expert counts, expert dims, every file present with the size the layout
// implies.
func OpenExperts(dir string, cfg *formats.Config, opts FileExpertsOptions) (*FileExperts, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 8
	}
	js, err := os.ReadFile(filepath.Join(dir, LayoutJSON))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrExperts, err)
	}
	pack, err := formats.ParsePackLayout(js)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrExperts, filepath.Join(dir, LayoutJSON), err)
	}
	if cfg != nil {
		if pack.NumLayers != cfg.NumHiddenLayers || pack.NumExperts != cfg.NumExperts {
			return nil, fmt.Errorf("%w: %s has %d layers × %d experts, the model has %d × %d",
				ErrExperts, dir, pack.NumLayers, pack.NumExperts, cfg.NumHiddenLayers, cfg.NumExperts)
		}
		if len(pack.Layers) != cfg.NumHiddenLayers {
			return nil, fmt.Errorf("%w: %s holds %d of the model's %d layers", ErrExperts, dir, len(pack.Layers), cfg.NumHiddenLayers)
		}
	}
	lay, err := LayoutFromPack(&pack.Expert)
	if err != nil {
		return nil, err
	}
	if opts.DirectIO && oDirect == 0 {
		return nil, fmt.Errorf("%w: direct I/O is not supported on this platform", ErrExperts)
	}
	fe := &FileExperts{dir: dir, pack: pack, layout: lay, opts: opts, files: map[string]*os.File{}}
	want := pack.FileSize()
	for _, name := range pack.Files() {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrExperts, err)
		}
		if st.Size() != want {
			return nil, fmt.Errorf("%w: %s is %d bytes, layout.json implies %d (%s layout, %d-byte experts)",
				ErrExperts, filepath.Join(dir, name), st.Size(), want, pack.Layout, pack.Expert.Size)
		}
	}
	return fe, nil
}

// Layout implements ExpertSource.
func (f *FileExperts) Layout() ExpertLayout { return f.layout }

// Pack returns the parsed layout.json.
func (f *FileExperts) Pack() *formats.PackLayout { return f.pack }

// Close closes the files kept open.
func (f *FileExperts) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	for _, fh := range f.files {
		errs = append(errs, fh.Close())
	}
	f.files = map[string]*os.File{}
	return errors.Join(errs...)
}

func (f *FileExperts) open(name string, direct bool) (fh *os.File, keep bool, err error) {
	flag := os.O_RDONLY
	if direct {
		flag |= oDirect
	}
	if f.pack.Layout != formats.PackLayoutLayer {
		fh, err = os.OpenFile(filepath.Join(f.dir, name), flag, 0)
		return fh, false, err
	}
	key := name
	if direct {
		key += "#direct"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fh, ok := f.files[key]; ok {
		return fh, true, nil
	}
	fh, err = os.OpenFile(filepath.Join(f.dir, name), flag, 0)
	if err != nil {
		return nil, false, err
	}
	f.files[key] = fh
	return fh, true, nil
}

// ReadExperts implements ExpertSource: expert ids[i] of layer into dst[i],
// up to Parallel reads at a time.
func (f *FileExperts) ReadExperts(ctx context.Context, layer int, ids []int, dst [][]byte) error {
	if len(ids) != len(dst) {
		return fmt.Errorf("runtime: ReadExperts: %d ids, %d buffers", len(ids), len(dst))
	}
	if layer < 0 || layer >= f.pack.NumLayers {
		return fmt.Errorf("%w: layer %d out of range", ErrExperts, layer)
	}
	size := f.layout.Size
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(f.opts.Parallel)
	for i, id := range ids {
		if id < 0 || id >= f.pack.NumExperts {
			return fmt.Errorf("%w: expert %d out of range", ErrExperts, id)
		}
		if int64(len(dst[i])) < size {
			return fmt.Errorf("runtime: ReadExperts: %d-byte buffer for a %d-byte expert", len(dst[i]), size)
		}
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			name, off := f.pack.ExpertFile(layer, id)
			buf := dst[i][:size]
			direct := f.opts.DirectIO && directOK(buf, off, size)
			fh, keep, err := f.open(name, direct)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrExperts, err)
			}
			if !keep {
				defer fh.Close()
			}
			rd := buf
			if direct {
				rd = buf[:roundUp(size, directAlign)]
			}
			n, err := fh.ReadAt(rd, off)
			if int64(n) < size {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("%w: reading layer %d expert %d from %s: %w", ErrExperts, layer, id, name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

const directAlign = 4096

func roundUp(n, a int64) int64 { return (n + a - 1) / a * a }

// directOK reports whether an O_DIRECT read of size bytes at off into buf is
// possible: aligned offset, aligned buffer start, room for the rounded length.
func directOK(buf []byte, off, size int64) bool {
	return off%directAlign == 0 && int64(cap(buf)) >= roundUp(size, directAlign) && addrOf(buf)%directAlign == 0
}
