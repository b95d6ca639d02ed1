package pack_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/atomicfile/atomicfiletest"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/pack"
)

// The tiny checkpoint and flash-moe goldens live with package convert.
const (
	tiny   = "../convert/testdata/tiny-mlx"
	golden = "../convert/testdata/golden/packed_experts"
)

var goldenLayers = []int{0, 1, 10}

func run(t *testing.T, ctx context.Context, out string, opt pack.Options, ropt pack.RunOptions, c progress.Counter) (*pack.Summary, error) {
	t.Helper()
	pk, err := pack.Open(tiny, opt)
	if err != nil {
		return nil, err
	}
	defer pk.Close()
	return pk.Run(ctx, out, ropt, c)
}

func TestGoldenLayerLayout(t *testing.T) {
	out := t.TempDir()
	s, err := run(t, context.Background(), out, pack.Options{Bits: 4, Layout: formats.PackLayoutLayer, Layers: goldenLayers}, pack.RunOptions{Jobs: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.Written != 3 || s.Bytes != 3*4*1920 {
		t.Errorf("summary %+v", s)
	}
	for _, l := range goldenLayers {
		name, _ := (&formats.PackLayout{Layout: formats.PackLayoutLayer}).ExpertFile(l, 0)
		got, _ := os.ReadFile(filepath.Join(out, name))
		want, err := os.ReadFile(filepath.Join(golden, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from flash-moe's repack_experts.py output", name)
		}
	}
	findings, err := pack.Verify(context.Background(), out, pack.VerifyOptions{Against: tiny}, nil)
	if err != nil || len(findings) != 0 {
		t.Errorf("verify: %v, %v", findings, err)
	}
}

func TestGoldenExpertLayout(t *testing.T) {
	out := t.TempDir()
	if _, err := run(t, context.Background(), out, pack.Options{Bits: 4}, pack.RunOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	l, err := pack.ReadLayout(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Layers) != 11 || len(l.Files()) != 44 || l.Expert.Size != 1920 {
		t.Fatalf("layout %+v", l)
	}
	for _, layer := range goldenLayers {
		lname, _ := (&formats.PackLayout{Layout: formats.PackLayoutLayer}).ExpertFile(layer, 0)
		want, _ := os.ReadFile(filepath.Join(golden, lname))
		for e := range 4 {
			name, _ := l.ExpertFile(layer, e)
			got, _ := os.ReadFile(filepath.Join(out, name))
			if !bytes.Equal(got, want[e*1920:(e+1)*1920]) {
				t.Errorf("%s differs from expert %d of flash-moe's %s", name, e, lname)
			}
		}
	}
}

func TestResumeAndForce(t *testing.T) {
	out := t.TempDir()
	opt := pack.Options{Bits: 4, Layers: []int{0, 1}}
	if _, err := run(t, context.Background(), out, opt, pack.RunOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	s, err := run(t, context.Background(), out, opt, pack.RunOptions{}, nil)
	if err != nil || s.Skipped != 8 || s.Written != 0 {
		t.Fatalf("re-run: %+v %v", s, err)
	}
	// Damage one file: only it is redone.
	p := filepath.Join(out, "layer_01_expert_0002.bin")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[5] ^= 0xff
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = run(t, context.Background(), out, opt, pack.RunOptions{}, nil)
	if err != nil || s.Skipped != 7 || s.Written != 1 {
		t.Fatalf("after damage: %+v %v", s, err)
	}
	s, err = run(t, context.Background(), out, opt, pack.RunOptions{Force: true}, nil)
	if err != nil || s.Written != 8 {
		t.Fatalf("--force: %+v %v", s, err)
	}
	// More layers into the same directory: the layout grows.
	if _, err := run(t, context.Background(), out, pack.Options{Bits: 4, Layers: []int{5}}, pack.RunOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	l, _ := pack.ReadLayout(out)
	if len(l.Layers) != 3 {
		t.Errorf("layers %v, want [0 1 5]", l.Layers)
	}
	if f, err := pack.Verify(context.Background(), out, pack.VerifyOptions{Against: tiny}, nil); err != nil || len(f) != 0 {
		t.Errorf("verify: %v %v", f, err)
	}
	// A different layout in the same directory needs --force.
	_, err = run(t, context.Background(), out, pack.Options{Bits: 4, Layout: formats.PackLayoutLayer}, pack.RunOptions{}, nil)
	if !errors.Is(err, pack.ErrLayoutConflict) {
		t.Errorf("err = %v, want ErrLayoutConflict", err)
	}
}

func TestCancelResumes(t *testing.T) {
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var n progress.Sum
	c := progress.Func(func(k int64) {
		if n.Load() > 10*1920 {
			cancel()
		}
		n.Add(k)
	})
	_, err := run(t, ctx, out, pack.Options{Bits: 4}, pack.RunOptions{Jobs: 1}, c)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	atomicfiletest.NoTemps(t, out)
	sums, err := pack.ReadChecksums(out)
	if err != nil {
		t.Fatalf("checksums after cancel: %v", err)
	}
	done := len(sums.Files) - 1 // minus layout.json
	if done == 0 || done >= 44 {
		t.Fatalf("%d files recorded after cancel", done)
	}
	es, _ := os.ReadDir(out)
	if len(es) != done+2 { // + layout.json, checksums.json: nothing unrecorded under a final name
		t.Errorf("%d entries, %d recorded files", len(es), done)
	}
	s, err := run(t, context.Background(), out, pack.Options{Bits: 4}, pack.RunOptions{}, nil)
	if err != nil || s.Skipped != done || s.Written != 44-done {
		t.Fatalf("resume: %+v %v", s, err)
	}
}

func TestVerifyFindings(t *testing.T) {
	out := t.TempDir()
	if _, err := run(t, context.Background(), out, pack.Options{Bits: 4, Layers: []int{0, 10}}, pack.RunOptions{}, nil); err != nil {
		t.Fatal(err)
	}
	rm := func(name string) {
		if err := os.Remove(filepath.Join(out, name)); err != nil {
			t.Fatal(err)
		}
	}
	edit := func(name string, f func([]byte) []byte) {
		p := filepath.Join(out, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rm("layer_00_expert_0001.bin")
	edit("layer_00_expert_0002.bin", func(b []byte) []byte { return b[:100] })
	// Byte 530 of an expert is in gate_proj.scales (offset 512, 64 bytes).
	edit("layer_10_expert_0003.bin", func(b []byte) []byte { b[530] ^= 1; return b })
	if err := os.WriteFile(filepath.Join(out, "stray.bin"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, ".layer_00_expert_0000.bin.fmoe-tmp-123"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(out, "subdir"), 0o755); err != nil { // directories are not findings
		t.Fatal(err)
	}

	findings, err := pack.Verify(context.Background(), out, pack.VerifyOptions{Against: tiny, Jobs: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		missing  *pack.Missing
		size     *pack.SizeMismatch
		corrupt  *pack.Corrupt
		extra    *pack.Extra
		mismatch *pack.ContentMismatch
		counts   = map[string]int{}
	)
	for _, f := range findings {
		switch {
		case errors.As(f, &missing):
			counts["missing"]++
			if missing.File != "layer_00_expert_0001.bin" {
				t.Errorf("missing %s", missing.File)
			}
		case errors.As(f, &size):
			counts["size"]++
			if size.File != "layer_00_expert_0002.bin" || size.Size != 100 || size.Want != 1920 {
				t.Errorf("size %+v", size)
			}
		case errors.As(f, &corrupt):
			counts["corrupt"]++
			if corrupt.File != "layer_10_expert_0003.bin" {
				t.Errorf("corrupt %+v", corrupt)
			}
		case errors.As(f, &extra):
			counts["extra"]++
		case errors.As(f, &mismatch):
			counts["mismatch"]++
			want := pack.ContentMismatch{File: "layer_10_expert_0003.bin", Layer: 10, Expert: 3, Component: "gate_proj.scales",
				Tensor: "language_model.model.layers.10.mlp.switch_mlp.gate_proj.scales"}
			if *mismatch != want {
				t.Errorf("mismatch %+v, want %+v", *mismatch, want)
			}
		default:
			t.Errorf("unexpected finding %v", f)
		}
	}
	if counts["missing"] != 1 || counts["size"] != 1 || counts["corrupt"] != 1 || counts["extra"] != 2 || counts["mismatch"] != 1 {
		t.Errorf("findings %v: %v", counts, findings)
	}
	// No checksums.json at all.
	rm(pack.ChecksumsFile)
	findings, err = pack.Verify(context.Background(), out, pack.VerifyOptions{}, nil)
	found := false
	for _, f := range findings {
		found = found || (errors.As(f, &missing) && missing.File == pack.ChecksumsFile)
	}
	if err != nil || !found {
		t.Errorf("without checksums.json: %v %v", findings, err)
	}
}

func TestPackDiskFull(t *testing.T) {
	out := atomicfiletest.SmallFS(t, 32<<10) // 44 experts × 1920 bytes do not fit
	_, err := run(t, context.Background(), out, pack.Options{Bits: 4}, pack.RunOptions{}, nil)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	atomicfiletest.NoTemps(t, out)
}

func TestUnwritableOutput(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, context.Background(), filepath.Join(file, "out"), pack.Options{Bits: 4}, pack.RunOptions{}, nil); err == nil {
		t.Fatal("pack into a path under a regular file succeeded")
	}
}
