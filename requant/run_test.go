package requant

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/pack"
	"github.com/fmoe/fmoe/quant"
)

const (
	tHidden, tInter, tLayers, tExperts = 128, 64, 3, 5
)

// fakeExpert builds one 4-bit expert block of layout l from Gaussian weights.
func fakeExpert(t testing.TB, r *rand.Rand, l *formats.ExpertLayout) []byte {
	t.Helper()
	blob := make([]byte, l.Size)
	for _, p := range Projections {
		rows, cols := l.Intermediate, l.Hidden
		if p == "down_proj" {
			rows, cols = l.Hidden, l.Intermediate
		}
		m, err := quant.Quantize(gaussian(r, rows, cols, 0.02), rows, cols, 4, l.GroupSize)
		if err != nil {
			t.Fatal(err)
		}
		put := func(name string, b []byte) {
			c, ok := l.Component(name)
			if !ok || int64(len(b)) != c.Size {
				t.Fatalf("component %s: %d bytes", name, len(b))
			}
			copy(blob[c.Offset:], b)
		}
		put(p+".weight", u32Bytes(m.W))
		put(p+".scales", u16Bytes(m.Scales))
		put(p+".biases", u16Bytes(m.Biases))
	}
	return blob
}

func u32Bytes(w []uint32) []byte {
	b := make([]byte, 4*len(w))
	copy(quant.U32s(b), w)
	return b
}

func u16Bytes(w []uint16) []byte {
	b := make([]byte, 2*len(w))
	copy(quant.U16s(b), w)
	return b
}

// writeInput writes a 4-bit packed-expert directory in the given layout and
// returns it with every expert's bytes ([layer][expert]).
func writeInput(t testing.TB, layout string) (string, [][][]byte) {
	t.Helper()
	dir := t.TempDir()
	el, err := formats.NewExpertLayout(tHidden, tInter, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	p := &formats.PackLayout{Format: formats.PackFormat, Layout: layout, NumLayers: tLayers, NumExperts: tExperts,
		Layers: []int{0, 1, 2}, Expert: *el, Checksums: pack.ChecksumsFile}
	r := rand.New(rand.NewPCG(11, 12))
	experts := make([][][]byte, tLayers)
	files := map[string][]byte{}
	for l := range tLayers {
		for e := range tExperts {
			b := fakeExpert(t, r, el)
			experts[l] = append(experts[l], b)
			name, off := p.ExpertFile(l, e)
			f := files[name]
			if int64(len(f)) < off+el.Size {
				f = append(f, make([]byte, off+el.Size-int64(len(f)))...)
			}
			copy(f[off:], b)
			files[name] = f
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeLayoutFile(t, dir, p)
	return dir, experts
}

func writeLayoutFile(t testing.TB, dir string, p *formats.PackLayout) {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, LayoutFile), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readOutput returns every output expert's bytes and checks the layout,
// checksums and report files of dir.
func readOutput(t *testing.T, dir string) ([][][]byte, *Report) {
	t.Helper()
	p, err := loadLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.Expert.Bits != 2 || p.Checksums != pack.ChecksumsFile {
		t.Fatalf("output layout %+v", p)
	}
	sums, err := pack.ReadChecksums(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range append(p.Files(), ReportFile) {
		s, ok := sums.Get(name)
		if !ok || !pack.Matches(context.Background(), sums, dir, name, s.Size, nil) {
			t.Fatalf("%s: checksum missing or wrong", name)
		}
	}
	out := make([][][]byte, p.NumLayers)
	for _, l := range p.Layers {
		for e := range p.NumExperts {
			name, off := p.ExpertFile(l, e)
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			out[l] = append(out[l], b[off:off+p.Expert.Size])
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	return out, &r
}

func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if atomicfile.IsTemp(e.Name()) {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}

func TestRunLayouts(t *testing.T) {
	var got [2][][][]byte
	var reports [2]*Report
	for i, layout := range []string{formats.PackLayoutExpert, formats.PackLayoutLayer} {
		in, experts := writeInput(t, layout)
		out := filepath.Join(t.TempDir(), "out")
		var c progress.Sum
		res, err := Run(context.Background(), Options{In: in, Out: out, Jobs: 3}, &c)
		if err != nil {
			t.Fatal(err)
		}
		l4, _ := formats.NewExpertLayout(tHidden, tInter, 4, 64)
		l2, _ := formats.NewExpertLayout(tHidden, tInter, 2, 64)
		if c.Load() != int64(tLayers*tExperts)*l4.Size || res.BytesIn != c.Load() || res.Skipped != 0 {
			t.Fatalf("%s: progress %d, result %+v", layout, c.Load(), res)
		}
		got[i], reports[i] = readOutput(t, out)
		noTemps(t, out)
		var total [3]Stats
		for l := range experts {
			for e, b := range experts[l] {
				want := make([]byte, l2.Size)
				if err := Expert(want, l2, b, l4, MinMax, &total); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got[i][l][e], want) {
					t.Fatalf("%s: layer %d expert %d differs from Expert()", layout, l, e)
				}
			}
		}
		for p, name := range Projections {
			if r := reports[i].Total[name]; r.N != total[p].N || r.RMSE != total[p].RMSE() {
				t.Fatalf("%s: report %s %+v, want %+v", layout, name, r, total[p])
			}
		}
		if !reports[i].Complete || reports[i].Experts != tLayers*tExperts || len(reports[i].Layers) != tLayers {
			t.Fatalf("%s: report %+v", layout, reports[i])
		}
	}
	if !slices.EqualFunc(got[0], got[1], func(a, b [][]byte) bool { return slices.EqualFunc(a, b, bytes.Equal) }) {
		t.Fatal("expert and layer layouts give different expert bytes")
	}
}

func TestRunDeterministicAndResumes(t *testing.T) {
	in, _ := writeInput(t, formats.PackLayoutLayer)
	outA, outB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	ctx := context.Background()
	if _, err := Run(ctx, Options{In: in, Out: outA, Jobs: 1, Method: MSE}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, Options{In: in, Out: outB, Jobs: 4, Method: MSE}, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"layer_00.bin", "layer_02.bin", ReportFile, pack.ChecksumsFile, LayoutFile} {
		a, _ := os.ReadFile(filepath.Join(outA, name))
		b, _ := os.ReadFile(filepath.Join(outB, name))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s differs between 1 and 4 workers", name)
		}
	}
	reportA, _ := os.ReadFile(filepath.Join(outA, ReportFile))

	// Corrupt one output: the re-run redoes it and keeps the others.
	bad := filepath.Join(outA, "layer_01.bin")
	data, _ := os.ReadFile(bad)
	data[100] ^= 1
	os.WriteFile(bad, data, 0o644)
	res, err := Run(ctx, Options{In: in, Out: outA, Method: MSE}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped != 2 || res.Files != 1 {
		t.Fatalf("resume: %+v", res)
	}
	if b, _ := os.ReadFile(filepath.Join(outA, ReportFile)); !bytes.Equal(b, reportA) {
		t.Fatal("report of a resumed run differs")
	}
	readOutput(t, outA)
	for _, o := range []Options{{Force: true, Method: MSE}, {Method: MinMax}} {
		o.In, o.Out = in, outA
		res, err := Run(ctx, o, nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Skipped != 0 {
			t.Fatalf("force=%v method=%s: %d outputs kept", o.Force, o.Method, res.Skipped)
		}
	}
}

// cancelAfter cancels a context once n bytes were reported.
type cancelAfter struct {
	n      int64
	sum    progress.Sum
	cancel context.CancelFunc
}

func (c *cancelAfter) Add(n int64) {
	c.sum.Add(n)
	if c.sum.Load() >= c.n {
		c.cancel()
	}
}

func TestRunCancelThenResume(t *testing.T) {
	in, experts := writeInput(t, formats.PackLayoutExpert)
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancel(context.Background())
	c := &cancelAfter{n: 4 * int64(len(experts[0][0])), cancel: cancel}
	_, err := Run(ctx, Options{In: in, Out: out, Jobs: 2}, c)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	noTemps(t, out)
	sums, err := pack.ReadChecksums(out)
	if err != nil {
		t.Fatalf("no checksums saved on cancel: %v", err)
	}
	done := 0
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".bin") {
			done++
			if _, ok := sums.Get(e.Name()); !ok {
				t.Fatalf("%s written but not recorded", e.Name())
			}
		}
	}
	if done == 0 || done == tLayers*tExperts {
		t.Fatalf("%d outputs finished before the cancel", done)
	}
	res, err := Run(context.Background(), Options{In: in, Out: out, Jobs: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped != done || res.Files != tLayers*tExperts-done {
		t.Fatalf("resume after cancel: %+v (had %d)", res, done)
	}
	readOutput(t, out)
}

func TestRunBadInput(t *testing.T) {
	type setup func(t *testing.T, in string) Options
	edit := func(f func(p *formats.PackLayout)) setup {
		return func(t *testing.T, in string) Options {
			p, err := loadLayout(in)
			if err != nil {
				t.Fatal(err)
			}
			f(p)
			writeLayoutFile(t, in, p)
			return Options{}
		}
	}
	cases := []struct {
		name   string
		layout string
		setup  setup
		want   error
		file   string // the error must name it
	}{
		{"no layout.json", formats.PackLayoutExpert, func(t *testing.T, in string) Options {
			os.Remove(filepath.Join(in, LayoutFile))
			return Options{}
		}, ErrLayout, LayoutFile},
		{"layout.json not JSON", formats.PackLayoutExpert, func(t *testing.T, in string) Options {
			os.WriteFile(filepath.Join(in, LayoutFile), []byte("{"), 0o644)
			return Options{}
		}, formats.ErrLayout, LayoutFile},
		{"inconsistent components", formats.PackLayoutLayer, edit(func(p *formats.PackLayout) { p.Expert.Components[3].Offset++ }), formats.ErrLayout, LayoutFile},
		{"expert size mismatch", formats.PackLayoutLayer, edit(func(p *formats.PackLayout) { p.Expert.Size += 4 }), ErrLayout, LayoutFile},
		{"not 4-bit", formats.PackLayoutExpert, edit(func(p *formats.PackLayout) {
			l, _ := formats.NewExpertLayout(tHidden, tInter, 8, 64)
			p.Expert = *l
		}), ErrNot4Bit, LayoutFile},
		{"truncated expert file", formats.PackLayoutExpert, func(t *testing.T, in string) Options {
			os.Truncate(filepath.Join(in, "layer_01_expert_0003.bin"), 1000)
			return Options{}
		}, ErrSize, "layer_01_expert_0003.bin"},
		{"layer file too long", formats.PackLayoutLayer, func(t *testing.T, in string) Options {
			f, _ := os.OpenFile(filepath.Join(in, "layer_02.bin"), os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0})
			f.Close()
			return Options{}
		}, ErrSize, "layer_02.bin"},
		{"missing expert file", formats.PackLayoutExpert, func(t *testing.T, in string) Options {
			os.Remove(filepath.Join(in, "layer_00_expert_0004.bin"))
			return Options{}
		}, fs.ErrNotExist, "layer_00_expert_0004.bin"},
		{"layer not in input", formats.PackLayoutLayer, func(t *testing.T, in string) Options {
			return Options{Layers: []int{1, 7}}
		}, ErrUsage, LayoutFile},
		{"output is the input", formats.PackLayoutLayer, func(t *testing.T, in string) Options {
			return Options{Out: in}
		}, ErrOutput, ""},
		{"unknown method", formats.PackLayoutLayer, func(t *testing.T, in string) Options {
			return Options{Method: "best"}
		}, ErrUsage, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, _ := writeInput(t, tc.layout)
			o := tc.setup(t, in)
			o.In = in
			if o.Out == "" {
				o.Out = filepath.Join(t.TempDir(), "out")
			}
			_, err := Run(context.Background(), o, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.file != "" && !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("error %q does not name %s", err, tc.file)
			}
			if o.Out != in {
				if ents, _ := os.ReadDir(o.Out); len(ents) != 0 {
					t.Fatalf("output written despite the error: %v", ents)
				}
			}
		})
	}
}
