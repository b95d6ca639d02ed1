package filecopy_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fmoe/fmoe/internal/atomicfile/atomicfiletest"
	"github.com/fmoe/fmoe/internal/filecopy"
	"github.com/fmoe/fmoe/internal/progress"
)

func writeSources(t *testing.T, dir string, sizes ...int) ([]string, [][]byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	var paths []string
	var datas [][]byte
	for i, n := range sizes {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		p := filepath.Join(dir, "src"+string(rune('a'+i)))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths, datas = append(paths, p), append(datas, b)
	}
	return paths, datas
}

// testPlan builds outputs with gaps, several sources, pieces crossing chunk
// boundaries, and an empty output; want holds the expected bytes.
func testPlan(t *testing.T, srcDir, outDir string) (*filecopy.Plan, map[string][]byte) {
	paths, data := writeSources(t, srcDir, 100_000, 70_000)
	p := &filecopy.Plan{Dir: outDir, Sources: paths}
	want := map[string][]byte{}
	add := func(name string, size int64, pcs ...filecopy.Piece) {
		b := make([]byte, size)
		for _, pc := range pcs {
			copy(b[pc.Dst:pc.Dst+pc.Len], data[pc.Src][pc.SrcOff:pc.SrcOff+pc.Len])
		}
		p.Outputs = append(p.Outputs, filecopy.Output{Name: name, Size: size, Pieces: pcs})
		want[name] = b
	}
	add("one.bin", 150_000,
		filecopy.Piece{Src: 1, SrcOff: 5, Dst: 0, Len: 60_000, Label: "t1"},
		filecopy.Piece{Src: 0, SrcOff: 1000, Dst: 60_064, Len: 50_000, Label: "t2"},
		filecopy.Piece{Src: 0, SrcOff: 0, Dst: 110_080, Len: 39_920, Label: "t3"})
	add("empty.bin", 0)
	for i := range 5 {
		add("e"+string(rune('0'+i))+".bin", 9_000,
			filecopy.Piece{Src: i % 2, SrcOff: int64(i) * 9_000, Dst: 0, Len: 9_000, Label: "x"})
	}
	return p, want
}

func TestRunDeterministic(t *testing.T) {
	var firstHashes map[string]uint64
	for _, opt := range []filecopy.Options{{Jobs: 1, ChunkSize: 4096}, {Jobs: 8, ChunkSize: 4096}, {Jobs: 3, ChunkSize: 1 << 20}} {
		out := t.TempDir()
		p, want := testPlan(t, t.TempDir(), out)
		var sum progress.Sum
		hashes := map[string]uint64{}
		err := filecopy.Run(context.Background(), p, opt, &sum, func(r filecopy.Result) error {
			hashes[r.Name] = r.Hash
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Load() != p.TotalBytes() {
			t.Errorf("progress %d, want %d", sum.Load(), p.TotalBytes())
		}
		for name, w := range want {
			got, err := os.ReadFile(filepath.Join(out, name))
			if err != nil || !bytes.Equal(got, w) {
				t.Fatalf("%+v: %s differs (err %v)", opt, name, err)
			}
			if hashes[name] != filecopy.HashBytes(w) {
				t.Errorf("%s: reported hash %x, want %x", name, hashes[name], filecopy.HashBytes(w))
			}
			size, h, err := filecopy.HashFile(context.Background(), filepath.Join(out, name), nil)
			if err != nil || size != int64(len(w)) || h != hashes[name] {
				t.Errorf("HashFile(%s) = %d, %x, %v", name, size, h, err)
			}
		}
		if firstHashes == nil {
			firstHashes = hashes
		}
		for name, h := range hashes {
			if firstHashes[name] != h {
				t.Errorf("%s: hash depends on options", name)
			}
		}
		atomicfiletest.NoTemps(t, out)
	}
}

func TestRunFailures(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(p *filecopy.Plan)
		want   error
	}{
		{"source too short", func(p *filecopy.Plan) { p.Outputs[0].Pieces[2].SrcOff = 99_000 }, filecopy.ErrSource},
		{"source missing", func(p *filecopy.Plan) { p.Sources[1] += ".gone" }, os.ErrNotExist},
		{"overlap", func(p *filecopy.Plan) { p.Outputs[0].Pieces[1].Dst = 100 }, filecopy.ErrPlan},
		{"past end", func(p *filecopy.Plan) { p.Outputs[0].Size = 100_000 }, filecopy.ErrPlan},
		{"bad source index", func(p *filecopy.Plan) { p.Outputs[0].Pieces[0].Src = 7 }, filecopy.ErrPlan},
		{"duplicate name", func(p *filecopy.Plan) { p.Outputs[3].Name = "e0.bin" }, filecopy.ErrPlan},
		{"unwritable dir", func(p *filecopy.Plan) { p.Dir = filepath.Join(p.Dir, "missing") }, os.ErrNotExist},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			p, _ := testPlan(t, t.TempDir(), out)
			tc.mutate(p)
			err := filecopy.Run(context.Background(), p, filecopy.Options{Jobs: 4, ChunkSize: 4096}, nil, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if _, err := os.Stat(filepath.Join(out, "one.bin")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("one.bin exists after failure")
			}
			atomicfiletest.NoTemps(t, out)
		})
	}
}

func TestRunCancel(t *testing.T) {
	out := t.TempDir()
	p, _ := testPlan(t, t.TempDir(), out)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n progress.Sum
	c := progress.Func(func(k int64) {
		if n.Load() > 20_000 {
			cancel()
		}
		n.Add(k)
	})
	committed := map[string]bool{}
	err := filecopy.Run(ctx, p, filecopy.Options{Jobs: 2, ChunkSize: 4096}, c, func(r filecopy.Result) error {
		committed[r.Name] = true
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	es, _ := os.ReadDir(out)
	for _, e := range es {
		if !committed[e.Name()] {
			t.Errorf("%s present but never committed", e.Name())
		}
	}
	atomicfiletest.NoTemps(t, out)
}

func TestRunDiskFull(t *testing.T) {
	out := atomicfiletest.SmallFS(t, 100<<10)
	p, _ := testPlan(t, t.TempDir(), out)
	p.Outputs[0].Size = 1 << 20
	err := filecopy.Run(context.Background(), p, filecopy.Options{Jobs: 2, ChunkSize: 4096}, nil, nil)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	atomicfiletest.NoTemps(t, out)
}

func BenchmarkRun(b *testing.B) {
	src := b.TempDir()
	data := make([]byte, 64<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := filepath.Join(src, "src")
	os.WriteFile(path, data, 0o644)
	out := b.TempDir()
	p := &filecopy.Plan{Dir: out, Sources: []string{path}, Outputs: []filecopy.Output{{Name: "o", Size: int64(len(data)),
		Pieces: []filecopy.Piece{{Src: 0, Len: int64(len(data))}}}}}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := filecopy.Run(context.Background(), p, filecopy.Options{}, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}
