package backendtest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fmoe/fmoe/quant"
	"github.com/fmoe/fmoe/runtime"
)

const guardLen = 16

// guardValue is written after every host buffer handed to the backend.
var guardValue = float32(math.Float32frombits(0x7fc0beef)) // a NaN payload

// Run runs the conformance suite. newBackend is called once per subtest.
func Run(t *testing.T, newBackend func(t *testing.T) runtime.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b runtime.Backend)
	}{
		{"UploadDownload", testUploadDownload},
		{"Embed", testEmbed},
		{"MatMul", testMatMul},
		{"RMSNorm", testRMSNorm},
		{"Elementwise", testElementwise},
		{"Attention", testAttention},
		{"DeltaNet", testDeltaNet},
		{"MoE", testMoE},
		{"Argmax", testArgmax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t)
			defer func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			tc.fn(t, b)
		})
	}
}

// ---- helpers ----

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((r.Float64()*2 - 1) * scale)
	}
	return v
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// guarded returns a copy of v inside a larger buffer whose tail holds guards;
// the returned slice has len(v) and the guards lie beyond it.
func guarded(v []float32) (s []float32, check func(t *testing.T, what string)) {
	buf := make([]float32, len(v)+guardLen)
	copy(buf, v)
	orig := append([]float32(nil), v...)
	for i := len(v); i < len(buf); i++ {
		buf[i] = guardValue
	}
	return buf[:len(v)], func(t *testing.T, what string) {
		t.Helper()
		for i := len(v); i < len(buf); i++ {
			if math.Float32bits(buf[i]) != math.Float32bits(guardValue) {
				t.Fatalf("%s: guard value %d past the end was overwritten", what, i-len(v))
			}
		}
		for i := range orig {
			if math.Float32bits(buf[i]) != math.Float32bits(orig[i]) {
				t.Fatalf("%s: read-only host buffer modified at %d", what, i)
			}
		}
	}
}

func upload(t *testing.T, b runtime.Backend, rows, cols int, v []float32) runtime.Tensor {
	t.Helper()
	x, err := b.NewTensor(rows, cols)
	if err != nil {
		t.Fatalf("NewTensor(%d,%d): %v", rows, cols, err)
	}
	if x.Rows() != rows || x.Cols() != cols {
		t.Fatalf("NewTensor(%d,%d) has shape %dx%d", rows, cols, x.Rows(), x.Cols())
	}
	if v != nil {
		src, check := guarded(v)
		if err := b.Upload(x, src); err != nil {
			t.Fatalf("Upload: %v", err)
		}
		check(t, "Upload source")
	}
	return x
}

func download(t *testing.T, b runtime.Backend, x runtime.Tensor) []float32 {
	t.Helper()
	n := x.Rows() * x.Cols()
	buf := make([]float32, n+guardLen)
	for i := range buf {
		buf[i] = guardValue
	}
	if err := b.Download(x, buf[:n]); err != nil {
		t.Fatalf("Download: %v", err)
	}
	for i := n; i < len(buf); i++ {
		if math.Float32bits(buf[i]) != math.Float32bits(guardValue) {
			t.Fatalf("Download wrote past the end of dst (guard %d)", i-n)
		}
	}
	return buf[:n]
}

// hostWeight is a weight with its float64 reference values and a check that
// the backend did not write its host buffers.
type hostWeight struct {
	data  *runtime.WeightData
	ref   []float64 // dequantized values, [Out*In]
	check func(t *testing.T)
}

// denseWeight builds a dense float32 weight [out, in].
func denseWeight(r *rand.Rand, name string, out, in int, scale float64) hostWeight {
	v := randVec(r, out*in, scale)
	return denseFrom(name, out, in, v)
}

func denseFrom(name string, out, in int, v []float32) hostWeight {
	s, check := guarded(v)
	return hostWeight{
		data:  &runtime.WeightData{Name: name, Out: out, In: in, F: s},
		ref:   f64(v),
		check: func(t *testing.T) { t.Helper(); check(t, "weight "+name) },
	}
}

// quantWeight builds a quantized weight [out, in] with MLX's quantizer.
func quantWeight(t *testing.T, r *rand.Rand, name string, out, in, bits, group int, scale float64) hostWeight {
	t.Helper()
	m, err := quant.Quantize(randVec(r, out*in, scale), out, in, bits, group)
	if err != nil {
		t.Fatalf("Quantize %s: %v", name, err)
	}
	return quantFrom(name, m)
}

func quantFrom(name string, m *quant.Matrix) hostWeight {
	w := append([]uint32(nil), m.W...)
	s := append([]uint16(nil), m.Scales...)
	bi := append([]uint16(nil), m.Biases...)
	ref := dequant(m)
	return hostWeight{
		data: &runtime.WeightData{Name: name, Out: m.Rows, In: m.Cols, Q: m},
		ref:  ref,
		check: func(t *testing.T) {
			t.Helper()
			if !slices.Equal(w, m.W) || !slices.Equal(s, m.Scales) || !slices.Equal(bi, m.Biases) {
				t.Fatalf("weight %s: quantized host buffers modified", name)
			}
		},
	}
}

func dequant(m *quant.Matrix) []float64 {
	row := make([]float32, m.Cols)
	ref := make([]float64, m.Rows*m.Cols)
	for i := 0; i < m.Rows; i++ {
		m.DequantizeRow(row, i)
		for c, v := range row {
			ref[i*m.Cols+c] = float64(v)
		}
	}
	return ref
}

func load(t *testing.T, b runtime.Backend, w hostWeight) runtime.Weight {
	t.Helper()
	rw, err := b.LoadWeight(w.data)
	if err != nil {
		t.Fatalf("LoadWeight %s: %v", w.data.Name, err)
	}
	if rw.Out() != w.data.Out || rw.In() != w.data.In {
		t.Fatalf("LoadWeight %s: shape %dx%d, want %dx%d", w.data.Name, rw.Out(), rw.In(), w.data.Out, w.data.In)
	}
	return rw
}

// checkClose compares got [rows, cols] with want per row: the largest
// absolute error of a row divided by the row's largest |want| (floored at
// floor) must not exceed tol.
func checkClose(t *testing.T, what string, got []float32, want []float64, cols int, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	const floor = 1e-3
	for r := 0; r*cols < len(want); r++ {
		var maxRef, maxErr float64
		at := 0
		for c := 0; c < cols; c++ {
			i := r*cols + c
			maxRef = math.Max(maxRef, math.Abs(want[i]))
			g := float64(got[i])
			if math.IsNaN(g) || math.IsInf(g, 0) {
				t.Fatalf("%s: row %d col %d is %v (want %g)", what, r, c, g, want[i])
			}
			if e := math.Abs(g - want[i]); e > maxErr {
				maxErr, at = e, c
			}
		}
		if rel := maxErr / math.Max(maxRef, floor); rel > tol {
			t.Fatalf("%s: row %d: relative error %.3g > %.3g (col %d: got %g want %g)",
				what, r, rel, tol, at, got[r*cols+at], want[r*cols+at])
		}
	}
}

// ---- basic ops ----

func testUploadDownload(t *testing.T, b runtime.Backend) {
	r := newRand(1)
	for _, sh := range [][2]int{{1, 1}, {1, 37}, {5, 64}} {
		v := randVec(r, sh[0]*sh[1], 3)
		x := upload(t, b, sh[0], sh[1], v)
		got := download(t, b, x)
		for i := range v {
			if got[i] != v[i] {
				t.Fatalf("%v: round trip differs at %d: %g != %g", sh, i, got[i], v[i])
			}
		}
		if err := b.Upload(x, make([]float32, len(v)+1)); err == nil {
			t.Errorf("%v: Upload of a wrong-length slice succeeded", sh)
		}
		if err := b.Download(x, make([]float32, len(v)-1)); err == nil {
			t.Errorf("%v: Download into a wrong-length slice succeeded", sh)
		}
	}
	z := upload(t, b, 3, 4, nil)
	for i, v := range download(t, b, z) {
		if v != 0 {
			t.Fatalf("NewTensor not zeroed at %d: %g", i, v)
		}
	}
}

// testArgmax checks the optional Argmaxer against runtime.Argmax on the
// downloaded row: vocabulary-sized rows, a limit below the length, ties (the
// lowest index wins), negative values, NaN and infinities.
func testArgmax(t *testing.T, b runtime.Backend) {
	am, ok := b.(runtime.Argmaxer)
	if !ok {
		t.Skipf("%s does not implement runtime.Argmaxer", b.Name())
	}
	r := newRand(12)
	nan := float32(math.NaN())
	cases := []struct {
		name string
		v    []float32
		n    int
	}{
		{"vocab", randVec(r, 248320, 4), 0},
		{"limit", randVec(r, 151936, 4), 151643},
		{"short", []float32{-3, -1, -2}, 0},
		{"ties", []float32{1, 5, 2, 5, 5, -7}, 0},
		{"nan", []float32{nan, -1, nan, 4, 2, nan}, 0},
		{"inf", []float32{float32(math.Inf(-1)), 0, float32(math.Inf(1)), 3}, 0},
		{"neg-zero", []float32{float32(math.Copysign(0, -1)), 0}, 0},
	}
	// a maximum placed past the limit must be ignored
	cases[1].v[151900] = 1e9
	// the same maximum twice far apart in a long row
	cases[0].v[200001], cases[0].v[7] = 100, 100
	for _, c := range cases {
		x := upload(t, b, 1, len(c.v), c.v)
		n := c.n
		if n == 0 {
			n = len(c.v)
		}
		got, err := am.Argmax(x, n)
		if err != nil {
			t.Fatalf("%s: Argmax: %v", c.name, err)
		}
		if want := runtime.Argmax(c.v, n); got != want {
			t.Errorf("%s: Argmax %d (%g), want %d (%g)", c.name, got, c.v[got], want, c.v[want])
		}
	}
	x := upload(t, b, 1, 4, nil)
	if _, err := am.Argmax(x, 5); err == nil {
		t.Errorf("Argmax over 5 of 4 values succeeded")
	}
}

func testEmbed(t *testing.T, b runtime.Backend) {
	r := newRand(2)
	const V, H = 11, 64
	tables := []hostWeight{
		denseWeight(r, "embed.dense", V, H, 1),
		quantWeight(t, r, "embed.q4", V, H, 4, 32, 1),
		quantWeight(t, r, "embed.q8", V, H, 8, 64, 1),
	}
	ids := []int32{0, 10, 3, 3, 7}
	for _, tab := range tables {
		w := load(t, b, tab)
		dst := upload(t, b, len(ids), H, nil)
		if err := b.Embed(dst, w, ids); err != nil {
			t.Fatalf("%s: Embed: %v", tab.data.Name, err)
		}
		want := make([]float64, 0, len(ids)*H)
		for _, id := range ids {
			want = append(want, tab.ref[int(id)*H:(int(id)+1)*H]...)
		}
		checkClose(t, tab.data.Name, download(t, b, dst), want, H, 1e-6)
		if err := b.Embed(dst, w, []int32{0, 1, V, 2, 3}); err == nil {
			t.Errorf("%s: Embed of id %d (table has %d rows) succeeded", tab.data.Name, V, V)
		}
		if err := b.Embed(dst, w, []int32{-1, 1, 2, 2, 3}); err == nil {
			t.Errorf("%s: Embed of id -1 succeeded", tab.data.Name)
		}
		tab.check(t)
	}
}

func testMatMul(t *testing.T, b runtime.Backend) {
	r := newRand(3)
	type shape struct{ out, in, bits, group int }
	shapes := []shape{
		{1, 64, 0, 0}, {17, 40, 0, 0}, {96, 128, 0, 0},
		{33, 64, 4, 64}, {96, 128, 4, 32}, {8, 256, 4, 64}, {1, 128, 4, 64},
		{33, 64, 8, 64}, {1, 256, 8, 64}, {64, 96, 8, 32},
		{33, 64, 2, 64}, {96, 128, 2, 32}, {7, 256, 2, 64},
	}
	for _, sh := range shapes {
		name := fmt.Sprintf("%dx%d/bits%d/g%d", sh.out, sh.in, sh.bits, sh.group)
		var hw hostWeight
		if sh.bits == 0 {
			hw = denseWeight(r, name, sh.out, sh.in, 0.5)
		} else {
			hw = quantWeight(t, r, name, sh.out, sh.in, sh.bits, sh.group, 0.5)
		}
		w := load(t, b, hw)
		for _, T := range []int{1, 3, 8} {
			xv := randVec(r, T*sh.in, 1)
			x := upload(t, b, T, sh.in, xv)
			dst := upload(t, b, T, sh.out, nil)
			if err := b.MatMul(dst, w, x); err != nil {
				t.Fatalf("%s T=%d: MatMul: %v", name, T, err)
			}
			want := refMatMul(hw.ref, sh.out, sh.in, f64(xv), T)
			checkClose(t, fmt.Sprintf("MatMul %s T=%d", name, T), download(t, b, dst), want, sh.out, 2e-5)
		}
		bad := upload(t, b, 2, sh.in+1, nil)
		if err := b.MatMul(upload(t, b, 2, sh.out, nil), w, bad); err == nil {
			t.Errorf("%s: MatMul with input width %d succeeded", name, sh.in+1)
		}
		hw.check(t)
	}
}

func testRMSNorm(t *testing.T, b runtime.Backend) {
	r := newRand(4)
	for _, c := range []struct{ T, cols, n int }{{1, 32, 32}, {3, 64, 64}, {4, 64, 16}, {2, 96, 32}} {
		name := fmt.Sprintf("T%d/%d/group%d", c.T, c.cols, c.n)
		hw := denseFrom("norm", 1, c.n, randVec(r, c.n, 2))
		w := load(t, b, hw)
		xv := randVec(r, c.T*c.cols, 3)
		x := upload(t, b, c.T, c.cols, xv)
		dst := upload(t, b, c.T, c.cols, nil)
		const eps = 1e-6
		want := refRMSNorm(f64(xv), hw.ref, eps)
		if err := b.RMSNorm(dst, x, w, eps); err != nil {
			t.Fatalf("%s: RMSNorm: %v", name, err)
		}
		checkClose(t, "RMSNorm "+name, download(t, b, dst), want, c.cols, 1e-5)
		if err := b.RMSNorm(x, x, w, eps); err != nil {
			t.Fatalf("%s: in-place RMSNorm: %v", name, err)
		}
		checkClose(t, "in-place RMSNorm "+name, download(t, b, x), want, c.cols, 1e-5)
		hw.check(t)
	}
}

func testElementwise(t *testing.T, b runtime.Backend) {
	r := newRand(5)
	for _, T := range []int{1, 4} {
		const n = 48
		av, bv, cv := randVec(r, T*n, 4), randVec(r, T*n, 4), randVec(r, T*n, 4)
		gv := randVec(r, T, 6)

		a := upload(t, b, T, n, av)
		if err := b.Add(a, upload(t, b, T, n, bv)); err != nil {
			t.Fatalf("Add: %v", err)
		}
		want := make([]float64, T*n)
		for i := range want {
			want[i] = float64(av[i]) + float64(bv[i])
		}
		checkClose(t, "Add", download(t, b, a), want, n, 1e-6)

		for _, inPlace := range []bool{false, true} {
			g := upload(t, b, T, n, av)
			dst := g
			if !inPlace {
				dst = upload(t, b, T, n, nil)
			}
			if err := b.SwiGLU(dst, g, upload(t, b, T, n, bv)); err != nil {
				t.Fatalf("SwiGLU: %v", err)
			}
			for i := range want {
				want[i] = silu(float64(av[i])) * float64(bv[i])
			}
			checkClose(t, fmt.Sprintf("SwiGLU inPlace=%v", inPlace), download(t, b, dst), want, n, 1e-5)
		}

		d := upload(t, b, T, n, cv)
		if err := b.SigmoidGateAdd(d, upload(t, b, T, n, bv), upload(t, b, T, 1, gv)); err != nil {
			t.Fatalf("SigmoidGateAdd: %v", err)
		}
		for i := range want {
			want[i] = float64(cv[i]) + sigmoid(float64(gv[i/n]))*float64(bv[i])
		}
		checkClose(t, "SigmoidGateAdd", download(t, b, d), want, n, 1e-5)

		if err := b.Add(a, upload(t, b, T, n+1, nil)); err == nil {
			t.Errorf("Add with mismatched shapes succeeded")
		}
	}
}

// chunks splits n tokens into calls of the given sizes (the last repeats).
func chunks(n int, sizes []int) [][2]int {
	var out [][2]int
	for at, i := 0, 0; at < n; i++ {
		s := sizes[min(i, len(sizes)-1)]
		s = min(s, n-at)
		out = append(out, [2]int{at, at + s})
		at += s
	}
	return out
}

func testAttention(t *testing.T, b runtime.Backend) {
	r := newRand(6)
	params := []runtime.AttentionParams{
		{Heads: 4, KVHeads: 2, HeadDim: 16, RotaryDim: 4, RopeTheta: 1e7, Eps: 1e-6},
		{Heads: 2, KVHeads: 1, HeadDim: 32, RotaryDim: 8, RopeTheta: 1e4, Eps: 1e-6},
		{Heads: 8, KVHeads: 2, HeadDim: 64, RotaryDim: 16, RopeTheta: 1e7, Eps: 1e-6},
	}
	const N = 11
	for pi, p := range params {
		qn := denseFrom("q_norm", 1, p.HeadDim, randVec(r, p.HeadDim, 1.5))
		kn := denseFrom("k_norm", 1, p.HeadDim, randVec(r, p.HeadDim, 1.5))
		qnw, knw := load(t, b, qn), load(t, b, kn)
		qw, kw := p.Heads*2*p.HeadDim, p.KVHeads*p.HeadDim
		qg, k, v := randVec(r, N*qw, 2), randVec(r, N*kw, 2), randVec(r, N*kw, 2)
		want := refAttention(f64(qg), f64(k), f64(v), N, qn.ref, kn.ref, p)
		ow := p.Heads * p.HeadDim
		cache, err := b.NewKVCache(p, N)
		if err != nil {
			t.Fatalf("NewKVCache: %v", err)
		}
		for _, split := range [][]int{{N}, {5, 1}, {1}, {3, 4}} {
			cache.Reset()
			if cache.Len() != 0 {
				t.Fatalf("Len after Reset = %d", cache.Len())
			}
			got := make([]float32, 0, N*ow)
			for _, c := range chunks(N, split) {
				T := c[1] - c[0]
				dst := upload(t, b, T, ow, nil)
				err := b.Attention(dst,
					upload(t, b, T, qw, qg[c[0]*qw:c[1]*qw]),
					upload(t, b, T, kw, k[c[0]*kw:c[1]*kw]),
					upload(t, b, T, kw, v[c[0]*kw:c[1]*kw]),
					cache, qnw, knw, p)
				if err != nil {
					t.Fatalf("params %d split %v: Attention: %v", pi, split, err)
				}
				got = append(got, download(t, b, dst)...)
				if cache.Len() != c[1] {
					t.Fatalf("cache Len = %d after %d tokens", cache.Len(), c[1])
				}
			}
			checkClose(t, fmt.Sprintf("Attention params %d split %v", pi, split), got, want, ow, 1e-4)
		}
		// The cache is full: one more token must be an error, not a panic.
		err = b.Attention(upload(t, b, 1, ow, nil), upload(t, b, 1, qw, nil), upload(t, b, 1, kw, nil),
			upload(t, b, 1, kw, nil), cache, qnw, knw, p)
		if err == nil {
			t.Errorf("params %d: Attention past the cache capacity succeeded", pi)
		}
		qn.check(t)
		kn.check(t)
	}
}

func testDeltaNet(t *testing.T, b runtime.Backend) {
	r := newRand(7)
	params := []runtime.DeltaParams{
		{KeyHeads: 2, ValueHeads: 4, KeyDim: 8, ValueDim: 8, ConvKernel: 4, Eps: 1e-6},
		{KeyHeads: 1, ValueHeads: 2, KeyDim: 16, ValueDim: 32, ConvKernel: 4, Eps: 1e-6},
		{KeyHeads: 2, ValueHeads: 2, KeyDim: 32, ValueDim: 16, ConvKernel: 3, Eps: 1e-6},
	}
	const N = 9
	for pi, p := range params {
		C := p.ConvDim()
		vd := p.ValueHeads * p.ValueDim
		conv := denseFrom("conv1d", C, p.ConvKernel, randVec(r, C*p.ConvKernel, 0.8))
		dt := denseFrom("dt_bias", 1, p.ValueHeads, randVec(r, p.ValueHeads, 1))
		al := denseFrom("A_log", 1, p.ValueHeads, randVec(r, p.ValueHeads, 1))
		nm := denseFrom("norm", 1, p.ValueDim, randVec(r, p.ValueDim, 1.5))
		cw, dw, aw, nw := load(t, b, conv), load(t, b, dt), load(t, b, al), load(t, b, nm)
		qkv, z := randVec(r, N*C, 2), randVec(r, N*vd, 2)
		bb, aa := randVec(r, N*p.ValueHeads, 3), randVec(r, N*p.ValueHeads, 3)
		want := refDeltaNet(f64(qkv), f64(z), f64(bb), f64(aa), N, conv.ref, dt.ref, al.ref, nm.ref, p)
		st, err := b.NewDeltaState(p)
		if err != nil {
			t.Fatalf("NewDeltaState: %v", err)
		}
		H := p.ValueHeads
		for _, split := range [][]int{{N}, {4, 1}, {1}, {2, 5}} {
			st.Reset()
			got := make([]float32, 0, N*vd)
			for _, c := range chunks(N, split) {
				T := c[1] - c[0]
				dst := upload(t, b, T, vd, nil)
				err := b.DeltaNet(dst,
					upload(t, b, T, C, qkv[c[0]*C:c[1]*C]),
					upload(t, b, T, vd, z[c[0]*vd:c[1]*vd]),
					upload(t, b, T, H, bb[c[0]*H:c[1]*H]),
					upload(t, b, T, H, aa[c[0]*H:c[1]*H]),
					st, cw, dw, aw, nw, p)
				if err != nil {
					t.Fatalf("params %d split %v: DeltaNet: %v", pi, split, err)
				}
				got = append(got, download(t, b, dst)...)
			}
			checkClose(t, fmt.Sprintf("DeltaNet params %d split %v", pi, split), got, want, p.ValueDim, 1e-4)
		}
		for _, w := range []hostWeight{conv, dt, al, nm} {
			w.check(t)
		}
	}
}

// ---- MoE ----

// memExperts is an in-memory ExpertSource that counts reads.
type memExperts struct {
	layout  runtime.ExpertLayout
	data    map[[2]int][]byte
	reads   map[[2]int]int
	maxIDs  int
	badCall error
}

func (m *memExperts) Layout() runtime.ExpertLayout { return m.layout }

func (m *memExperts) ReadExperts(ctx context.Context, layer int, ids []int, dst [][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(ids) != len(dst) {
		m.badCall = fmt.Errorf("ReadExperts: %d ids but %d buffers", len(ids), len(dst))
		return m.badCall
	}
	m.maxIDs = max(m.maxIDs, len(ids))
	for i, id := range ids {
		src, ok := m.data[[2]int{layer, id}]
		if !ok {
			m.badCall = fmt.Errorf("ReadExperts: no expert %d in layer %d", id, layer)
			return m.badCall
		}
		if int64(len(dst[i])) < m.layout.Size {
			m.badCall = fmt.Errorf("ReadExperts: buffer of %d bytes for a %d-byte expert", len(dst[i]), m.layout.Size)
			return m.badCall
		}
		copy(dst[i], src)
		m.reads[[2]int{layer, id}]++
	}
	return nil
}

type refExp struct{ gate, up, down []float64 }

func newMemExperts(t *testing.T, r *rand.Rand, layers []int, E, hidden, inter, bits, group int) (*memExperts, map[[2]int]refExp) {
	t.Helper()
	l, err := runtime.PackedExpertLayout(hidden, inter, bits, group)
	if err != nil {
		t.Fatal(err)
	}
	m := &memExperts{layout: l, data: map[[2]int][]byte{}, reads: map[[2]int]int{}}
	refs := map[[2]int]refExp{}
	for _, layer := range layers {
		for e := 0; e < E; e++ {
			buf := make([]byte, l.Size)
			var mats [3][]float64
			for i, p := range []runtime.ProjLayout{l.Gate, l.Up, l.Down} {
				q, err := quant.Quantize(randVec(r, p.Out*p.In, 0.3), p.Out, p.In, bits, group)
				if err != nil {
					t.Fatal(err)
				}
				copy(buf[p.WOffset:], bytesOf32(q.W))
				copy(buf[p.SOffset:], bytesOf16(q.Scales))
				copy(buf[p.BOffset:], bytesOf16(q.Biases))
				mats[i] = dequant(q)
			}
			m.data[[2]int{layer, e}] = buf
			refs[[2]int{layer, e}] = refExp{mats[0], mats[1], mats[2]}
		}
	}
	return m, refs
}

func bytesOf32(v []uint32) []byte {
	out := make([]byte, 4*len(v))
	for i, w := range v {
		out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = byte(w), byte(w>>8), byte(w>>16), byte(w>>24)
	}
	return out
}

func bytesOf16(v []uint16) []byte {
	out := make([]byte, 2*len(v))
	for i, w := range v {
		out[2*i], out[2*i+1] = byte(w), byte(w>>8)
	}
	return out
}

func testMoE(t *testing.T, b runtime.Backend) {
	type moeCase struct {
		E, K, hidden, inter, bits, group, routerBits int
	}
	cases := []moeCase{
		{E: 8, K: 3, hidden: 64, inter: 32, bits: 4, group: 32, routerBits: 0},
		{E: 8, K: 2, hidden: 64, inter: 32, bits: 2, group: 32, routerBits: 8},
		{E: 16, K: 4, hidden: 128, inter: 64, bits: 4, group: 64, routerBits: 4},
		{E: 6, K: 6, hidden: 64, inter: 64, bits: 8, group: 64, routerBits: 0},
	}
	for ci, c := range cases {
		r := newRand(uint64(100 + ci))
		layers := []int{0, 3}
		src, refs := newMemExperts(t, r, layers, c.E, c.hidden, c.inter, c.bits, c.group)
		for _, layer := range layers {
			var rw hostWeight
			if c.routerBits == 0 {
				rw = denseWeight(r, "router", c.E, c.hidden, 0.3)
			} else {
				rw = quantWeight(t, r, "router", c.E, c.hidden, c.routerBits, 64, 0.3)
			}
			router := load(t, b, rw)
			for _, T := range []int{1, 5, 12} {
				name := fmt.Sprintf("case %d layer %d T=%d", ci, layer, T)
				// Draw tokens whose top-K is not a near tie.
				xv := make([]float32, 0, T*c.hidden)
				var wantIDs [][]int
				var wantW [][]float64
				for len(wantIDs) < T {
					x := randVec(r, c.hidden, 2)
					ids, w, gap := refRoute(refMatMul(rw.ref, c.E, c.hidden, f64(x), 1), c.E, c.K)
					if gap < 1e-3 {
						continue
					}
					xv = append(xv, x...)
					wantIDs, wantW = append(wantIDs, ids), append(wantW, w)
				}
				want := make([]float64, T*c.hidden)
				for tk := 0; tk < T; tk++ {
					for i, e := range wantIDs[tk] {
						re := refs[[2]int{layer, e}]
						y := refExpert(re.gate, re.up, re.down, c.hidden, c.inter, f64(xv[tk*c.hidden:(tk+1)*c.hidden]))
						for j := range y {
							want[tk*c.hidden+j] += wantW[tk][i] * y[j]
						}
					}
				}
				clear(src.reads)
				dst := upload(t, b, T, c.hidden, randVec(r, T*c.hidden, 1)) // MoE overwrites dst
				x := upload(t, b, T, c.hidden, xv)
				var routing runtime.Routing
				p := runtime.MoEParams{Layer: layer, NumExperts: c.E, TopK: c.K}
				if err := b.MoE(context.Background(), dst, x, router, src, p, &routing); err != nil {
					t.Fatalf("%s: MoE: %v", name, err)
				}
				if src.badCall != nil {
					t.Fatalf("%s: %v", name, src.badCall)
				}
				checkClose(t, "MoE "+name, download(t, b, dst), want, c.hidden, 1e-4)
				if len(routing.Experts) != T || len(routing.Weights) != T {
					t.Fatalf("%s: routing has %d/%d tokens, want %d", name, len(routing.Experts), len(routing.Weights), T)
				}
				for tk := 0; tk < T; tk++ {
					if fmt.Sprint(routing.Experts[tk]) != fmt.Sprint(wantIDs[tk]) {
						t.Fatalf("%s token %d: experts %v, want %v", name, tk, routing.Experts[tk], wantIDs[tk])
					}
					for i, w := range routing.Weights[tk] {
						if math.Abs(float64(w)-wantW[tk][i]) > 1e-5 {
							t.Fatalf("%s token %d: weights %v, want %v", name, tk, routing.Weights[tk], wantW[tk])
						}
					}
				}
				for k, n := range src.reads {
					if n > 1 {
						t.Errorf("%s: expert %v read %d times in one MoE call", name, k, n)
					}
				}
				// Without routing output the result is the same.
				dst2 := upload(t, b, T, c.hidden, nil)
				if err := b.MoE(context.Background(), dst2, x, router, src, p, nil); err != nil {
					t.Fatalf("%s: MoE without routing: %v", name, err)
				}
				checkClose(t, "MoE (nil routing) "+name, download(t, b, dst2), want, c.hidden, 1e-4)
			}
			rw.check(t)
		}
		// A canceled context stops the block with the context's error.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		router := load(t, b, denseWeight(r, "router", c.E, c.hidden, 0.3))
		err := b.MoE(ctx, upload(t, b, 1, c.hidden, nil), upload(t, b, 1, c.hidden, randVec(r, c.hidden, 1)),
			router, src, runtime.MoEParams{Layer: 0, NumExperts: c.E, TopK: c.K}, nil)
		if err == nil {
			t.Errorf("case %d: MoE with a canceled context succeeded", ci)
		}
	}
}
