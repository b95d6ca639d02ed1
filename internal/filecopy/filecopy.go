package filecopy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"
)

// ErrPlan reports an inconsistent plan (pieces overlapping, out of range or
// naming an unknown source).
var ErrPlan = errors.New("filecopy: bad copy plan")

// ErrSource reports a source file that is missing or shorter than a piece
// needs.
var ErrSource = errors.New("filecopy: bad source")

// Defaults for Options.
const (
	DefaultChunkSize = 4 << 20
	MaxJobs          = 64
)

// Piece copies Len bytes from source Src at SrcOff to the output at Dst.
type Piece struct {
	Src    int    // index into Plan.Sources
	SrcOff int64  // absolute offset in the source file
	Dst    int64  // offset in the output file
	Len    int64  // bytes
	Label  string // what the bytes are (a tensor name), for error messages
}

// Output is one file to write: Size bytes, Pieces sorted by Dst and not
// overlapping; bytes no piece covers are zero.
type Output struct {
	Name   string // file name inside Plan.Dir
	Size   int64
	Pieces []Piece
}

// Plan is a complete copy job.
type Plan struct {
	Dir     string   // output directory (must exist)
	Sources []string // source file paths
	// Readers, when set, holds for each source index a reader used instead
	// of opening Sources[i] (nil entries are opened from Sources): computed
	// sources such as an HF release converted on the fly (package hfconv).
	Readers []io.ReaderAt
	Outputs []Output
}

// Options tunes execution; zero values pick defaults.
type Options struct {
	Jobs      int // concurrent workers (default GOMAXPROCS clamped to [4, MaxJobs])
	ChunkSize int // bytes per chunk (default DefaultChunkSize)
}

func (o Options) withDefaults() Options {
	if o.Jobs <= 0 {
		o.Jobs = min(max(runtime.GOMAXPROCS(0), 4), MaxJobs)
	}
	o.Jobs = min(o.Jobs, MaxJobs)
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	return o
}

// Result describes one committed output.
type Result struct {
	Name string
	Size int64
	Hash uint64
}

// TotalBytes returns the bytes the plan writes.
func (p *Plan) TotalBytes() int64 {
	var n int64
	for _, o := range p.Outputs {
		n += o.Size
	}
	return n
}

// Validate checks the plan's internal consistency.
func (p *Plan) Validate() error {
	seen := map[string]bool{}
	for _, o := range p.Outputs {
		if o.Name == "" || filepath.Base(o.Name) != o.Name || seen[o.Name] {
			return fmt.Errorf("%w: output name %q empty, not plain or repeated", ErrPlan, o.Name)
		}
		seen[o.Name] = true
		var end int64
		for _, pc := range o.Pieces {
			if pc.Src < 0 || pc.Src >= len(p.Sources) || pc.Len < 0 || pc.SrcOff < 0 ||
				pc.Dst < end || pc.Dst > o.Size-pc.Len {
				return fmt.Errorf("%w: %s: piece %q (src %d, dst %d, len %d) out of order or range (size %d)",
					ErrPlan, o.Name, pc.Label, pc.Src, pc.Dst, pc.Len, o.Size)
			}
			end = pc.Dst + pc.Len
		}
	}
	return nil
}

// outState tracks one output while it is being written.
type outState struct {
	out     *Output
	nChunks int
	file    *atomicfile.File

	mu      sync.Mutex
	next    int // next chunk to hash
	pending map[int][]byte
	hash    *xxh3.Hasher
	done    bool
}

type chunk struct {
	st    *outState
	index int
	off   int64
	buf   []byte
}

// Run executes the plan. done (may be nil) is called, one call at a time,
// after each output is committed. On error or cancellation uncommitted
// outputs are removed and the first error is returned; outputs committed
// before that stay and were reported to done.
func Run(ctx context.Context, p *Plan, opt Options, c progress.Counter, done func(Result) error) (err error) {
	if err := p.Validate(); err != nil {
		return err
	}
	opt = opt.withDefaults()
	c = progress.Or(c)
	srcs := make([]io.ReaderAt, len(p.Sources))
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for i, path := range p.Sources {
		if i < len(p.Readers) && p.Readers[i] != nil {
			srcs[i] = p.Readers[i]
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrSource, err)
		}
		srcs[i] = f
		opened = append(opened, f)
	}

	nbuf := 2 * opt.Jobs
	pool := make(chan []byte, nbuf)
	for range nbuf {
		pool <- nil // allocated lazily, at most nbuf buffers ever
	}
	var (
		doneMu   sync.Mutex
		statesMu sync.Mutex
		states   []*outState
	)
	defer func() {
		statesMu.Lock()
		defer statesMu.Unlock()
		for _, st := range states {
			st.mu.Lock()
			if !st.done && st.file != nil {
				st.file.Abort()
			}
			st.mu.Unlock()
		}
	}()

	g, gctx := errgroup.WithContext(ctx)
	work := make(chan chunk)

	finish := func(st *outState) error {
		if err := st.file.Commit(); err != nil {
			return err
		}
		st.done = true
		if done == nil {
			return nil
		}
		doneMu.Lock()
		defer doneMu.Unlock()
		return done(Result{Name: st.out.Name, Size: st.out.Size, Hash: st.hash.Sum64()})
	}
	// deliver hands a written chunk to its output's in-order hasher.
	deliver := func(ck chunk) error {
		st := ck.st
		st.mu.Lock()
		defer st.mu.Unlock()
		st.pending[ck.index] = ck.buf
		for {
			b, ok := st.pending[st.next]
			if !ok {
				return nil
			}
			delete(st.pending, st.next)
			st.hash.Write(b)
			pool <- b[:cap(b)]
			st.next++
			if st.next == st.nChunks {
				return finish(st)
			}
		}
	}

	// Dispatcher: outputs and chunks in order, one pooled buffer per chunk.
	g.Go(func() error {
		defer close(work)
		for i := range p.Outputs {
			o := &p.Outputs[i]
			f, err := atomicfile.Create(p.Dir, o.Name, o.Size)
			if err != nil {
				return err
			}
			st := &outState{out: o, file: f, pending: map[int][]byte{}, hash: xxh3.New(),
				nChunks: int((o.Size + int64(opt.ChunkSize) - 1) / int64(opt.ChunkSize))}
			statesMu.Lock()
			states = append(states, st)
			statesMu.Unlock()
			if st.nChunks == 0 {
				st.mu.Lock()
				err := finish(st)
				st.mu.Unlock()
				if err != nil {
					return err
				}
				continue
			}
			for k := range st.nChunks {
				var buf []byte
				select {
				case buf = <-pool:
				case <-gctx.Done():
					return gctx.Err()
				}
				if buf == nil {
					buf = make([]byte, opt.ChunkSize)
				}
				off := int64(k) * int64(opt.ChunkSize)
				n := min(int64(opt.ChunkSize), o.Size-off)
				select {
				case work <- chunk{st: st, index: k, off: off, buf: buf[:n]}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	for range opt.Jobs {
		g.Go(func() error {
			for ck := range work {
				if err := gctx.Err(); err != nil {
					return err
				}
				if err := fill(ck, srcs, p.Sources); err != nil {
					return err
				}
				if _, err := ck.st.file.WriteAt(ck.buf, ck.off); err != nil {
					return err
				}
				c.Add(int64(len(ck.buf)))
				if err := deliver(ck); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// fill reads the bytes of chunk ck from the sources; gaps become zero.
func fill(ck chunk, srcs []io.ReaderAt, names []string) error {
	o := ck.st.out
	lo, hi := ck.off, ck.off+int64(len(ck.buf))
	// first piece ending after lo
	i := sort.Search(len(o.Pieces), func(i int) bool { return o.Pieces[i].Dst+o.Pieces[i].Len > lo })
	pos := lo // bytes before pos are filled
	for ; i < len(o.Pieces) && o.Pieces[i].Dst < hi; i++ {
		pc := o.Pieces[i]
		a, b := max(pc.Dst, lo), min(pc.Dst+pc.Len, hi)
		if a > pos {
			clear(ck.buf[pos-lo : a-lo])
		}
		dst := ck.buf[a-lo : b-lo]
		n, err := srcs[pc.Src].ReadAt(dst, pc.SrcOff+(a-pc.Dst))
		if n < len(dst) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%w: read %s from %s at %d: %w", ErrSource, pc.Label, names[pc.Src], pc.SrcOff+(a-pc.Dst), err)
		}
		pos = b
	}
	if pos < hi {
		clear(ck.buf[pos-lo:])
	}
	return nil
}
