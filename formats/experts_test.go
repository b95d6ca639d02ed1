package formats

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestExpertLayout397B(t *testing.T) {
	// Offsets and sizes from reference §6.5 (4-bit) and §6.6 (2-bit), as
	// produced by flash-moe's repack scripts.
	cases := []struct {
		bits    int
		size    int64
		offsets []int64
		sizes   []int64
	}{
		{4, 7077888,
			[]int64{0, 2097152, 2228224, 2359296, 4456448, 4587520, 4718592, 6815744, 6946816},
			[]int64{2097152, 131072, 131072, 2097152, 131072, 131072, 2097152, 131072, 131072}},
		{2, 3932160,
			[]int64{0, 1048576, 1179648, 1310720, 2359296, 2490368, 2621440, 3670016, 3801088},
			[]int64{1048576, 131072, 131072, 1048576, 131072, 131072, 1048576, 131072, 131072}},
	}
	for _, c := range cases {
		l, err := NewExpertLayout(4096, 1024, c.bits, 64)
		if err != nil {
			t.Fatal(err)
		}
		if l.Size != c.size {
			t.Errorf("%d-bit: size %d, want %d", c.bits, l.Size, c.size)
		}
		for i, comp := range l.Components {
			if comp.Name != ExpertComponentNames[i] || comp.Offset != c.offsets[i] || comp.Size != c.sizes[i] {
				t.Errorf("%d-bit component %d: %+v", c.bits, i, comp)
			}
			if sz, _ := ByteSize(DType(comp.DType), comp.Shape); sz != comp.Size {
				t.Errorf("%s: shape %v disagrees with size %d", comp.Name, comp.Shape, comp.Size)
			}
		}
		down, _ := l.Component("down_proj.weight")
		if want := int64(4096 * 1024 * c.bits / 32); down.Shape[0] != 4096 || down.Shape[1]*4096 != want {
			t.Errorf("down shape %v", down.Shape)
		}
	}
	for _, bad := range [][4]int{{4096, 1024, 3, 64}, {4096, 1000, 4, 64}, {0, 1024, 4, 64}, {4096, 1024, 4, 4}, {4096, 1024, 4, 0}} {
		if _, err := NewExpertLayout(bad[0], bad[1], bad[2], bad[3]); !errors.Is(err, ErrLayout) {
			t.Errorf("%v: got %v", bad, err)
		}
	}
}

func testPackLayout(t testing.TB, layout string) *PackLayout {
	l, err := NewExpertLayout(256, 128, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	return &PackLayout{Format: PackFormat, Layout: layout, NumLayers: 4, NumExperts: 8, Layers: []int{0, 1, 3}, Expert: *l, Checksums: "checksums.sha256"}
}

func TestPackLayout(t *testing.T) {
	for _, layout := range []string{PackLayoutExpert, PackLayoutLayer} {
		p := testPackLayout(t, layout)
		b, _ := json.Marshal(p)
		q, err := ParsePackLayout(b)
		if err != nil {
			t.Fatal(err)
		}
		name, off := q.ExpertFile(3, 5)
		switch layout {
		case PackLayoutExpert:
			if name != "layer_03_expert_0005.bin" || off != 0 || len(q.Files()) != 24 || q.FileSize() != p.Expert.Size {
				t.Errorf("expert layout: %s %d %d", name, off, len(q.Files()))
			}
		case PackLayoutLayer:
			if name != "layer_03.bin" || off != 5*p.Expert.Size || len(q.Files()) != 3 || q.FileSize() != 8*p.Expert.Size {
				t.Errorf("layer layout: %s %d %d", name, off, len(q.Files()))
			}
		}
	}
	mutations := map[string]func(p *PackLayout){
		"format":         func(p *PackLayout) { p.Format = "flash-moe" },
		"layout":         func(p *PackLayout) { p.Layout = "tensor" },
		"layers order":   func(p *PackLayout) { p.Layers = []int{1, 0} },
		"layer range":    func(p *PackLayout) { p.Layers = []int{4} },
		"no experts":     func(p *PackLayout) { p.NumExperts = 0 },
		"size":           func(p *PackLayout) { p.Expert.Size++ },
		"component":      func(p *PackLayout) { p.Expert.Components[3].Offset++ },
		"bits":           func(p *PackLayout) { p.Expert.Bits = 2 },
		"checksums path": func(p *PackLayout) { p.Checksums = "../x" },
		"few components": func(p *PackLayout) { p.Expert.Components = p.Expert.Components[:8] },
	}
	for name, mut := range mutations {
		p := testPackLayout(t, PackLayoutExpert)
		mut(p)
		b, _ := json.Marshal(p)
		if _, err := ParsePackLayout(b); !errors.Is(err, ErrLayout) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := ParsePackLayout([]byte(`{`)); !errors.Is(err, ErrLayout) {
		t.Errorf("bad JSON: %v", err)
	}
}

func TestParseManifestErrors(t *testing.T) {
	good := `{"model":"m","num_tensors":2,"tensors":{"a":{"offset":0,"size":8,"shape":[4],"dtype":"BF16"},"b":{"offset":64,"size":16,"shape":[2,2],"dtype":"U32"}},"config":{}}`
	m, err := ParseManifest([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if m.End() != 80 {
		t.Errorf("end %d", m.End())
	}
	cases := map[string]struct {
		data string
		want error
	}{
		"not JSON":   {`{`, ErrManifest},
		"no tensors": {`{"model":"m","num_tensors":0}`, ErrManifest},
		"count":      {`{"num_tensors":2,"tensors":{"a":{"offset":0,"size":8,"shape":[4],"dtype":"BF16"}}}`, ErrManifest},
		"dtype":      {`{"num_tensors":1,"tensors":{"a":{"offset":0,"size":8,"shape":[4],"dtype":"Q4"}}}`, ErrDType},
		"size":       {`{"num_tensors":1,"tensors":{"a":{"offset":0,"size":9,"shape":[4],"dtype":"BF16"}}}`, ErrShape},
		"no shape":   {`{"num_tensors":1,"tensors":{"a":{"offset":0,"size":8,"dtype":"BF16"}}}`, ErrManifest},
		"negative":   {`{"num_tensors":1,"tensors":{"a":{"offset":-8,"size":8,"shape":[4],"dtype":"BF16"}}}`, ErrManifest},
		"overlap":    {`{"num_tensors":2,"tensors":{"a":{"offset":0,"size":8,"shape":[4],"dtype":"BF16"},"b":{"offset":4,"size":8,"shape":[4],"dtype":"BF16"}}}`, ErrOffsets},
	}
	for name, c := range cases {
		if _, err := ParseManifest([]byte(c.data)); !errors.Is(err, c.want) || !errors.Is(err, ErrManifest) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func TestInferQuant(t *testing.T) {
	cases := []struct {
		w, s      []int64
		in, group int
		want      QuantSpec
	}{
		{[]int64{512, 512}, []int64{512, 64}, 4096, 0, QuantSpec{64, 4}},
		{[]int64{512, 1024}, []int64{512, 64}, 4096, 0, QuantSpec{64, 8}},
		{[]int64{512, 4096, 128}, []int64{512, 4096, 16}, 0, 64, QuantSpec{64, 4}},
		{[]int64{512, 1024, 256}, []int64{512, 1024, 64}, 4096, 0, QuantSpec{64, 2}},
	}
	for _, c := range cases {
		got, err := InferQuant(c.w, c.s, c.in, c.group)
		if err != nil || got != c.want {
			t.Errorf("InferQuant(%v,%v,%d,%d) = %v, %v", c.w, c.s, c.in, c.group, got, err)
		}
	}
	for _, c := range []struct {
		w, s      []int64
		in, group int
	}{
		{[]int64{512, 512}, []int64{256, 64}, 4096, 0},
		{[]int64{512, 512}, []int64{512, 64}, 0, 0},
		{[]int64{512, 700}, []int64{512, 64}, 4096, 0},
		{[]int64{512, 448}, []int64{512, 64}, 4096, 0},
		{[]int64{512}, []int64{512}, 4096, 0},
	} {
		if _, err := InferQuant(c.w, c.s, c.in, c.group); !errors.Is(err, ErrShape) {
			t.Errorf("InferQuant(%v,%v,%d) accepted: %v", c.w, c.s, c.in, err)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"model":"m","num_tensors":2,"tensors":{"a":{"offset":0,"size":8,"shape":[4],"dtype":"BF16"},"b":{"offset":64,"size":16,"shape":[2,2],"dtype":"U32"}},"config":{"hidden_size":8}}`))
	f.Add([]byte(`{"num_tensors":1,"tensors":{"a":{"offset":9223372036854775800,"size":8,"shape":[4],"dtype":"BF16"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error %v does not wrap ErrManifest", err)
			}
			return
		}
		if m.NumTensors != len(m.Tensors) || m.End() < 0 {
			t.Fatalf("accepted inconsistent manifest")
		}
		_, _ = ConfigFromManifest(m)
	})
}

func FuzzParsePackLayout(f *testing.F) {
	for _, layout := range []string{PackLayoutExpert, PackLayoutLayer} {
		b, _ := json.Marshal(testPackLayout(f, layout))
		f.Add(b)
	}
	f.Add([]byte(`{"format":"fmoe-experts/1","layout":"layer","num_layers":1,"num_experts":1,"expert":{"bits":4,"group_size":64,"hidden":64,"intermediate":64}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePackLayout(b)
		if err != nil {
			if !errors.Is(err, ErrLayout) {
				t.Fatalf("error %v does not wrap ErrLayout", err)
			}
			return
		}
		var end int64
		for _, c := range p.Expert.Components {
			if c.Offset != end {
				t.Fatalf("component %s not contiguous", c.Name)
			}
			end += c.Size
		}
		if end != p.Expert.Size || p.FileSize() <= 0 {
			t.Fatalf("sizes inconsistent")
		}
	})
}
