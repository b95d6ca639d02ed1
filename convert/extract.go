package convert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/hfconv"
	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/filecopy"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/pack"
)

// Output file names.
const (
	WeightsFile         = "model_weights.bin"
	ManifestFile        = "model_weights.json"
	VocabFile           = "vocab.bin"
	TokenizerBinFile    = "tokenizer.bin"
	TokenizerJSONFile   = "tokenizer.json"
	TokenizerConfigFile = "tokenizer_config.json"
)

// Options tunes Run.
type Options struct {
	Jobs  int  // copy workers (0: default)
	Force bool // rewrite model_weights.bin even if checksums say it is complete
}

// Summary describes a finished extraction.
type Summary struct {
	Out      string         `json:"out"`
	Tensors  int            `json:"tensors"`
	Skipped  map[string]int `json:"skipped"`
	Bytes    int64          `json:"bytes"`  // bytes written (model_weights.bin unless reused, plus small files)
	Reused   bool           `json:"reused"` // model_weights.bin was complete and kept
	Files    []string       `json:"files"`  // files written or kept, in order
	Warnings []string       `json:"warnings,omitempty"`
	Seconds  float64        `json:"seconds"`
}

// Extractor is an opened source checkpoint with its plan.
type Extractor struct {
	Src        string
	Checkpoint *checkpoint.Checkpoint
	Plan       *Plan
}

// Open inventories the checkpoint at src (headers only) and plans
// model_weights.bin.
func Open(src string) (*Extractor, error) {
	return OpenHF(src, hfconv.Options{})
}

// OpenHF is Open with the quantization used when src is an original HF
// release (BF16/F16/F32/FP8), which is converted on the fly (package hfconv).
func OpenHF(src string, hf hfconv.Options) (*Extractor, error) {
	ck, _, err := hfconv.Open(src, hf)
	if err != nil {
		return nil, err
	}
	p, err := PlanExtract(ck.Tensors)
	if err != nil {
		ck.Close()
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	return &Extractor{Src: filepath.Clean(src), Checkpoint: ck, Plan: p}, nil
}

// Close releases the checkpoint.
func (x *Extractor) Close() error { return x.Checkpoint.Close() }

// TotalBytes is the size of model_weights.bin, the bulk of the work.
func (x *Extractor) TotalBytes() int64 { return x.Plan.Size }

// CopyPlan is the filecopy plan writing model_weights.bin into out.
func (x *Extractor) CopyPlan(out string) *filecopy.Plan {
	ck := x.Checkpoint
	idx := map[string]int{}
	cp := &filecopy.Plan{Dir: out}
	for _, f := range ck.Files {
		idx[f] = len(cp.Sources)
		cp.Sources = append(cp.Sources, filepath.Join(ck.Dir, f))
	}
	o := filecopy.Output{Name: WeightsFile, Size: x.Plan.Size}
	for _, e := range x.Plan.Entries {
		o.Pieces = append(o.Pieces, filecopy.Piece{Src: idx[e.Source.File], SrcOff: e.Source.Info.Offset,
			Dst: e.Offset, Len: e.Source.Info.Size, Label: "tensor " + e.Source.Info.Name + " in " + e.Source.File})
	}
	cp.Outputs = []filecopy.Output{o}
	cp.Readers = ck.Readers(ck.Files)
	return cp
}

// Run writes the model directory out (created if needed). c counts
// model_weights.bin bytes (copied, or re-hashed when resuming).
func (x *Extractor) Run(ctx context.Context, out string, opt Options, c progress.Counter) (*Summary, error) {
	start := time.Now()
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	s := &Summary{Out: out, Tensors: len(x.Plan.Entries), Skipped: x.Plan.Skipped}
	var prev *pack.Checksums
	if !opt.Force {
		prev, _ = pack.ReadChecksums(out) // absent or unreadable: nothing to resume
	}
	sums := pack.NewChecksums()

	// The tokenizer files are CPU work (parse tokenizer.json, build vocab.bin
	// and tokenizer.bin): done while model_weights.bin is copied.
	tokc := make(chan tokenizerFiles, 1)
	go func() { tokc <- x.tokenizerFiles() }()

	// model_weights.bin
	if pack.Matches(ctx, prev, out, WeightsFile, x.Plan.Size, c) {
		fs, _ := prev.Get(WeightsFile)
		sums.Files[WeightsFile] = fs
		s.Reused = true
	} else {
		err := filecopy.Run(ctx, x.CopyPlan(out), filecopy.Options{Jobs: opt.Jobs}, c, func(r filecopy.Result) error {
			sums.Set(r.Name, r.Size, r.Hash)
			s.Bytes += r.Size
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	s.Files = append(s.Files, WeightsFile)

	put := func(name string, data []byte) error {
		err := atomicfile.Write(ctx, filepath.Join(out, name), 0o644, func(f *os.File) error {
			_, err := f.Write(data)
			return err
		})
		if err != nil {
			return err
		}
		sums.Set(name, int64(len(data)), filecopy.HashBytes(data))
		s.Bytes += int64(len(data))
		s.Files = append(s.Files, name)
		return nil
	}

	man, err := ManifestJSON(x.Plan, x.Src, x.Checkpoint.Config)
	if err != nil {
		return nil, err
	}
	if err := put(ManifestFile, man); err != nil {
		return nil, err
	}

	tok := <-tokc
	switch {
	case tok.err != nil:
		return nil, tok.err
	case tok.warning != "":
		s.Warnings = append(s.Warnings, tok.warning)
	default:
		for _, f := range []struct {
			name string
			data []byte
		}{{VocabFile, tok.vocab}, {TokenizerBinFile, tok.bin}, {TokenizerJSONFile, tok.json}} {
			if err := put(f.name, f.data); err != nil {
				return nil, err
			}
		}
	}
	if data, err := os.ReadFile(filepath.Join(x.Src, TokenizerConfigFile)); err == nil {
		if err := put(TokenizerConfigFile, data); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := sums.Write(ctx, out); err != nil {
		return nil, err
	}
	s.Files = append(s.Files, pack.ChecksumsFile)
	s.Seconds = time.Since(start).Seconds()
	return s, nil
}

// ManifestJSON renders model_weights.json the way flash-moe's json.dump(...,
// indent=2) lays it out: keys model, num_tensors, tensors (in file order),
// config; two-space indent, one array element per line, no final newline.
// Only the config block's content differs from flash-moe's (it comes from
// config.json instead of constants).
func ManifestJSON(p *Plan, model string, cfg *formats.Config) ([]byte, error) {
	m := p.Manifest(model, cfg)
	var b bytes.Buffer
	enc := func(v any, prefix string) error {
		data, err := json.MarshalIndent(v, prefix, "  ")
		if err != nil {
			return err
		}
		b.Write(data)
		return nil
	}
	b.WriteString("{\n  \"model\": ")
	if err := enc(m.Model, ""); err != nil {
		return nil, err
	}
	fmt.Fprintf(&b, ",\n  \"num_tensors\": %d,\n  \"tensors\": {", m.NumTensors)
	for i, e := range p.Entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("\n    ")
		enc(e.Name, "")
		b.WriteString(": ")
		if err := enc(m.Tensors[e.Name], "    "); err != nil {
			return nil, err
		}
	}
	if len(p.Entries) > 0 {
		b.WriteString("\n  ")
	}
	b.WriteString("},\n  \"config\": ")
	if m.Config == nil {
		m.Config = map[string]any{}
	}
	if err := enc(m.Config, "  "); err != nil {
		return nil, err
	}
	b.WriteString("\n}")
	return b.Bytes(), nil
}

// tokenizerFiles holds vocab.bin, tokenizer.bin and tokenizer.json built
// from the source's tokenizer.json; warning is set when there is none.
type tokenizerFiles struct {
	vocab, bin, json []byte
	warning          string
	err              error
}

func (x *Extractor) tokenizerFiles() (t tokenizerFiles) {
	tokPath := filepath.Join(x.Src, TokenizerJSONFile)
	data, err := os.ReadFile(tokPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		t.warning = fmt.Sprintf("%s not found: vocab.bin and tokenizer.bin not written", tokPath)
		return t
	case err != nil:
		t.err = err
		return t
	}
	tok, err := formats.ParseTokenizerJSON(data)
	if err != nil {
		t.err = fmt.Errorf("%s: %w", tokPath, err)
		return t
	}
	var vb, tb bytes.Buffer
	if err := formats.WriteVocabBin(&vb, tok); err != nil {
		t.err = fmt.Errorf("%s: vocab.bin: %w", tokPath, err)
		return t
	}
	if err := formats.WriteTokenizerBin(&tb, tok); err != nil {
		t.err = fmt.Errorf("%s: tokenizer.bin: %w", tokPath, err)
		return t
	}
	t.vocab, t.bin, t.json = vb.Bytes(), tb.Bytes(), data
	return t
}
