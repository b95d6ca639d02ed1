package synth

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sync/errgroup"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/quant"
	"github.com/fmoe/fmoe/tokenizer/qwen3"
)

// chunkElems bounds the values generated per job (16 MiB of float32). It
// also fixes the per-chunk random streams, so it must not depend on the
// worker count.
const chunkElems = 1 << 22

// Write executes the plan into dir (created if needed): the shards, the
// index, the tokenizer files and, last, config.json, each written
// atomically. workers ≤ 0 means GOMAXPROCS. prog receives the bytes
// written (may be nil). On error or cancellation no final file of the
// failed stage is left half-written.
func Write(ctx context.Context, dir string, p *Plan, workers int, prog progress.Counter) (err error) {
	prog = progress.Or(prog)
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	files := make([]*atomicfile.File, len(p.Shards))
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Abort()
			}
		}
	}()
	for i, s := range p.Shards {
		f, err := atomicfile.Create(dir, s.Name, s.Size)
		if err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		files[i] = f
		if _, err := f.WriteAt(s.Prefix, 0); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		prog.Add(int64(len(s.Prefix)))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	seed := p.Options.Seed
schedule:
	for si, s := range p.Shards {
		for _, mi := range s.Modules {
			m := &p.Modules[mi]
			rows, cols := m.Rows(), m.Cols()
			per := max(1, chunkElems/cols)
			for chunk, r0 := int64(0), int64(0); r0 < rows; chunk, r0 = chunk+1, r0+per {
				if gctx.Err() != nil {
					break schedule
				}
				j := job{m: m, r0: r0, r1: min(rows, r0+per), chunk: chunk, seed: seed, f: files[si], tensors: s.Tensors, prog: prog}
				g.Go(func() error { return j.run(gctx) })
			}
		}
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for i, f := range files {
		if err := f.Commit(); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		files[i] = nil
	}
	return writeMeta(ctx, dir, p)
}

// writeMeta writes the index, tokenizer files and config.json.
func writeMeta(ctx context.Context, dir string, p *Plan) error {
	var total int64
	for _, s := range p.Shards {
		for _, t := range s.Tensors {
			total += t.Size
		}
	}
	idx, err := json.MarshalIndent(formats.SafetensorsIndex{
		Metadata:  map[string]any{"total_size": total},
		WeightMap: p.WeightMap(),
	}, "", "    ")
	if err != nil {
		return err
	}
	tok, err := qwen3.TokenizerJSON()
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	tokCfg, err := qwen3.TokenizerConfigJSON()
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	cfg, err := p.Options.ConfigJSON()
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"model.safetensors.index.json", idx},
		{"tokenizer.json", tok},
		{"tokenizer_config.json", tokCfg},
		{"config.json", cfg},
	} {
		err := atomicfile.Write(ctx, filepath.Join(dir, f.name), 0o644, func(w *os.File) error {
			_, err := w.Write(f.data)
			return err
		})
		if err != nil {
			return fmt.Errorf("synth: %w", err)
		}
	}
	return nil
}

// job generates rows [r0, r1) of a module and writes them in place.
type job struct {
	m       *Module
	r0, r1  int64
	chunk   int64
	seed    uint64
	f       *atomicfile.File
	tensors map[string]formats.TensorInfo
	prog    progress.Counter
}

func (j *job) run(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := j.m
	rows, cols := int(j.r1-j.r0), int(m.Cols())
	vals := make([]float32, rows*cols)
	fill(vals, m, newRand(j.seed, m.Name, j.chunk))
	if m.Quant == nil {
		t := j.tensors[m.Name]
		var buf []byte
		switch m.DType {
		case formats.F32:
			buf = make([]byte, 4*len(vals))
			for i, v := range vals {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
			}
		default: // BF16
			buf = make([]byte, 2*len(vals))
			for i, v := range vals {
				binary.LittleEndian.PutUint16(buf[2*i:], quant.F32ToBF16(v))
			}
		}
		return j.write(buf, t.Offset+j.r0*int64(len(buf))/int64(rows))
	}
	q, err := quant.Quantize(vals, rows, cols, m.Quant.Bits, m.Quant.GroupSize)
	if err != nil {
		return fmt.Errorf("synth: module %s: %w", m.Name, err)
	}
	w := make([]byte, 4*len(q.W))
	for i, v := range q.W {
		binary.LittleEndian.PutUint32(w[4*i:], v)
	}
	if err := j.write(w, j.tensors[m.Name+".weight"].Offset+j.r0*int64(len(w))/int64(rows)); err != nil {
		return err
	}
	for _, part := range []struct {
		suffix string
		v      []uint16
	}{{".scales", q.Scales}, {".biases", q.Biases}} {
		b := make([]byte, 2*len(part.v))
		for i, v := range part.v {
			binary.LittleEndian.PutUint16(b[2*i:], v)
		}
		if err := j.write(b, j.tensors[m.Name+part.suffix].Offset+j.r0*int64(len(b))/int64(rows)); err != nil {
			return err
		}
	}
	return nil
}

func (j *job) write(b []byte, off int64) error {
	if _, err := j.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("synth: module %s: %w", j.m.Name, err)
	}
	j.prog.Add(int64(len(b)))
	return nil
}

// newRand returns the generator of one chunk of one module.
func newRand(seed uint64, name string, chunk int64) *rand.PCG {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.NewPCG(seed, h.Sum64()^uint64(chunk)*0x9e3779b97f4a7c15)
}

// fill draws the module's values. Gaussian values use the sum of four
// 16-bit uniforms (Irwin–Hall, scaled to unit variance): close enough to a
// normal for weights, and far cheaper than NormFloat64.
func fill(dst []float32, m *Module, r *rand.PCG) {
	switch m.Kind {
	case aLog:
		for i := range dst {
			u := float64(r.Uint64()>>11) / (1 << 53)
			dst[i] = float32(math.Log(1 + 15*u))
		}
	case dtBias:
		lo, hi := math.Log(1e-3), math.Log(1e-1)
		for i := range dst {
			u := float64(r.Uint64()>>11) / (1 << 53)
			dt := math.Exp(lo + (hi-lo)*u)
			dst[i] = float32(dt + math.Log(-math.Expm1(-dt))) // softplus⁻¹
		}
	default:
		const inv = 1.0 / 65536
		scale := float32(m.Std * math.Sqrt(3))
		mean := float32(m.Mean)
		for i := range dst {
			x := r.Uint64()
			s := x&0xffff + x>>16&0xffff + x>>32&0xffff + x>>48
			dst[i] = mean + scale*(float32(s)*inv-2)
		}
	}
}
