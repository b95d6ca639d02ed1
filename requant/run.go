package requant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"

	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/pack"
)

const checksumsFile = pack.ChecksumsFile

// Result summarizes a run.
type Result struct {
	Report   *Report
	Files    int   // output data files written
	Skipped  int   // finished outputs of a previous run kept (checksums matched)
	BytesIn  int64 // 4-bit bytes read
	BytesOut int64 // 2-bit bytes written
}

// fileState is an output file in flight.
type fileState struct {
	f       outFile
	src     *os.File
	dst     *atomicfile.File // nil when the file is kept (measure only)
	old     *os.File         // the kept file, read back for the report
	mu      sync.Mutex
	next    int            // next expert to hash
	pending map[int][]byte // finished experts waiting for their turn
	h       *xxh3.Hasher
	left    int // experts not yet finished (measure-only files)
	closed  bool
}

func (s *fileState) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if s.dst != nil {
		s.dst.Abort() // no-op after Commit
	}
	for _, f := range []*os.File{s.src, s.old} {
		if f != nil {
			f.Close()
		}
	}
}

// hashed feeds finished experts to the file's hash strictly in order. It
// returns the buffers it is done with and whether the file is complete.
func (s *fileState) hashed(k int, buf []byte) (free [][]byte, complete bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[k] = buf
	for {
		b, ok := s.pending[s.next]
		if !ok {
			break
		}
		s.h.Write(b)
		delete(s.pending, s.next)
		free = append(free, b)
		s.next++
	}
	return free, s.next == s.f.experts
}

type job struct {
	s *fileState
	k int // expert index within the file
}

// Run converts the 4-bit experts of opt.In into 2-bit experts in opt.Out:
// data files, layout.json, requant_report.json and checksums.json. It plans
// first (every input is checked before anything is written), then requantizes
// one expert at a time per worker with reused buffers; every output is
// written under a temporary name and renamed when complete. On error or
// cancellation, unfinished outputs are removed and the checksums of the
// finished ones are saved, so a re-run resumes: outputs whose checksums match
// are kept (unless opt.Force). c receives 4-bit bytes processed.
func Run(ctx context.Context, opt Options, c progress.Counter) (*Result, error) {
	c = progress.Or(c)
	p, err := makePlan(&opt)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("requant: output directory: %w", err)
	}
	removeStaleTemps(opt.Out, p.files)
	prev := previousRun(opt)
	sums := pack.NewChecksums()
	stats := make([][][3]Stats, len(p.layers))
	for i := range stats {
		stats[i] = make([][3]Stats, p.in.NumExperts)
	}
	res := &Result{}

	// Decide which outputs a previous run already finished.
	keep := make([]bool, len(p.files))
	for i, f := range p.files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if pack.Matches(ctx, prev, opt.Out, f.name, f.dstSize, nil) {
			keep[i] = true
			s, _ := prev.Get(f.name)
			sums.Files[f.name] = s
			res.Skipped++
		}
	}

	saveOnExit := func() {
		// Keep what is finished, so a re-run resumes (even after Ctrl-C).
		bg := context.WithoutCancel(ctx)
		r := newReport(opt.Method, opt.In, p.layers, stats)
		if writeReport(bg, opt.Out, r, sums) == nil {
			sums.Write(bg, opt.Out)
		}
	}

	jobs := make(chan job)
	pool := make(chan []byte, 2*opt.Jobs)
	for range cap(pool) {
		pool <- make([]byte, p.eout.size)
	}
	var states []*fileState
	var statesMu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for i, f := range p.files {
			s, err := openState(opt.Out, f, keep[i])
			if err != nil {
				return err
			}
			statesMu.Lock()
			states = append(states, s)
			statesMu.Unlock()
			for k := range f.experts {
				select {
				case jobs <- job{s, k}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	for range opt.Jobs {
		g.Go(func() error {
			w := worker{p: p, opt: &opt, stats: stats, sums: sums, pool: pool, c: c,
				in: make([]byte, p.ein.size)}
			return w.loop(gctx, jobs)
		})
	}
	err = g.Wait()
	for _, s := range states {
		s.close()
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		saveOnExit()
		return nil, err
	}

	r := newReport(opt.Method, opt.In, p.layers, stats)
	r.Complete = true
	if err := writeLayout(ctx, opt.Out, p.out, sums); err != nil {
		return nil, err
	}
	if err := writeReport(ctx, opt.Out, r, sums); err != nil {
		return nil, err
	}
	if err := sums.Write(ctx, opt.Out); err != nil {
		return nil, fmt.Errorf("requant: %w", err)
	}
	res.Report = r
	res.Files = len(p.files) - res.Skipped
	res.BytesIn = p.inputBytes()
	for i, f := range p.files {
		if !keep[i] {
			res.BytesOut += f.dstSize
		}
	}
	return res, nil
}

func openState(out string, f outFile, keep bool) (*fileState, error) {
	src, err := os.Open(f.src)
	if err != nil {
		return nil, fmt.Errorf("requant: input: %w", err)
	}
	s := &fileState{f: f, src: src, left: f.experts}
	if keep {
		if s.old, err = os.Open(filepath.Join(out, f.name)); err != nil {
			src.Close()
			return nil, fmt.Errorf("requant: kept output: %w", err)
		}
		return s, nil
	}
	if s.dst, err = atomicfile.Create(out, f.name, f.dstSize); err != nil {
		src.Close()
		return nil, fmt.Errorf("requant: %w", err)
	}
	s.pending = map[int][]byte{}
	s.h = xxh3.New()
	return s, nil
}

type worker struct {
	p     *plan
	opt   *Options
	stats [][][3]Stats
	sums  *pack.Checksums
	pool  chan []byte
	c     progress.Counter
	in    []byte
}

func (w *worker) loop(ctx context.Context, jobs <-chan job) error {
	for {
		// Take a buffer before a job: the expert the in-order hash waits
		// for is then always held by a worker that can finish it.
		var buf []byte
		select {
		case buf = <-w.pool:
		case <-ctx.Done():
			return ctx.Err()
		}
		var j job
		var ok bool
		select {
		case j, ok = <-jobs:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !ok {
			return nil
		}
		if err := w.do(j, buf); err != nil {
			return err
		}
		w.c.Add(w.p.ein.size)
	}
}

func (w *worker) do(j job, buf []byte) error {
	s, f := j.s, &j.s.f
	e := f.expert0 + j.k
	if err := readFull(s.src, w.in, f.srcOff+int64(j.k)*w.p.ein.size); err != nil {
		return fmt.Errorf("%w: %s: expert %d of layer %d: %w", ErrSize, f.src, e, w.p.layers[f.layer], err)
	}
	st := &w.stats[f.layer][e]
	*st = [3]Stats{}
	outOff := int64(j.k) * w.p.eout.size
	if s.dst == nil { // kept output: measure it for the report
		defer func() { w.pool <- buf }()
		if err := readFull(s.old, buf, outOff); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrSize, filepath.Join(w.opt.Out, f.name), err)
		}
		if err := measureExpert(buf, w.p.eout, w.in, w.p.ein, st); err != nil {
			return err
		}
		s.mu.Lock()
		s.left--
		done := s.left == 0
		s.mu.Unlock()
		if done {
			s.close()
		}
		return nil
	}
	if err := expert(buf, w.p.eout, w.in, w.p.ein, w.opt.Method, st); err != nil {
		return fmt.Errorf("requant: %s: expert %d of layer %d: %w", f.src, e, w.p.layers[f.layer], err)
	}
	if _, err := s.dst.WriteAt(buf, outOff); err != nil {
		return fmt.Errorf("requant: %w", err)
	}
	free, complete := s.hashed(j.k, buf)
	for _, b := range free {
		w.pool <- b
	}
	if !complete {
		return nil
	}
	if err := s.dst.Commit(); err != nil {
		return fmt.Errorf("requant: %w", err)
	}
	w.sums.Set(f.name, f.dstSize, s.h.Sum64())
	s.close()
	return nil
}

// readFull reads len(b) bytes at off; a short read wraps io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read %d bytes at %d: %w", len(b), off, err)
}

// previousRun returns the checksums of a previous run into opt.Out with the
// same method, or nil (nothing is trusted: every output is redone).
func previousRun(opt Options) *pack.Checksums {
	if opt.Force {
		return nil
	}
	data, err := os.ReadFile(filepath.Join(opt.Out, ReportFile))
	if err != nil {
		return nil
	}
	var r Report
	if json.Unmarshal(data, &r) != nil || r.Method != opt.Method {
		return nil
	}
	sums, err := pack.ReadChecksums(opt.Out)
	if err != nil {
		return nil
	}
	return sums
}

// removeStaleTemps deletes temporary files of planned outputs left by a
// killed run.
func removeStaleTemps(dir string, files []outFile) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	planned := map[string]bool{}
	for _, f := range files {
		planned[f.name] = true
	}
	for _, e := range ents {
		n := e.Name()
		if !atomicfile.IsTemp(n) {
			continue
		}
		base, _, _ := strings.Cut(strings.TrimPrefix(n, "."), ".fmoe-tmp-")
		if planned[base] || base == ReportFile || base == LayoutFile || base == checksumsFile {
			os.Remove(filepath.Join(dir, n))
		}
	}
}

func writeJSON(ctx context.Context, path string, v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	data = append(data, '\n')
	err = atomicfile.Write(ctx, path, 0o644, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("requant: %w", err)
	}
	return data, nil
}

// writeLayout writes layout.json and records it in sums, as pack-experts
// does, so verify checks it too.
func writeLayout(ctx context.Context, dir string, l any, sums *pack.Checksums) error {
	data, err := writeJSON(ctx, filepath.Join(dir, LayoutFile), l)
	if err != nil {
		return err
	}
	sums.Set(LayoutFile, int64(len(data)), xxh3.Hash(data))
	return nil
}

// writeReport writes requant_report.json and records it in sums, so verify
// knows the file.
func writeReport(ctx context.Context, dir string, r *Report, sums *pack.Checksums) error {
	data, err := writeJSON(ctx, filepath.Join(dir, ReportFile), r)
	if err != nil {
		return err
	}
	sums.Set(ReportFile, int64(len(data)), xxh3.Hash(data))
	return nil
}
