package cuda

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fmoe/fmoe/quant"
	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
)

// decodeCase is the shape of fusedSteps' decode step: hidden H, attention
// width Q, shared expert S, E experts of I, top-K, steps of one token, the
// MoE alternating between two layers.
type decodeCase struct {
	H, Q, S, E, K, I, steps int
	gateBits                int // the shared expert's sigmoid gate row (0: 4, like the rest)
}

// fusedSteps runs the engine's op sequence of a decode step (input norm and
// three projections of its output, output projection and residual, post
// norm and MoE, shared expert with SwiGLU, sigmoid gate and residual) for
// dc.steps steps; run returns every intermediate tensor after each step.
// The weights and inputs depend on seed alone.
func fusedSteps(t *testing.T, seed uint64, dc decodeCase) *steps {
	r := rand.New(rand.NewPCG(seed, seed+1))
	H, Q, S, E, K, I := dc.H, dc.Q, dc.S, dc.E, dc.K, dc.I
	src := newMemSourceDims(t, r, E, H, I, 4, 64)
	vec := func(n int, s float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = s * (2*r.Float32() - 1)
		}
		return v
	}
	type wdef struct{ out, in int }
	wq := map[string]*runtime.WeightData{}
	defs := map[string]wdef{"qa": {Q, H}, "qb": {64, H}, "qc": {Q, H}, "o": {H, Q},
		"router": {E, H}, "sg": {S, H}, "su": {S, H}, "sd": {H, S}, "sgate": {1, H}}
	for _, name := range slices.Sorted(maps.Keys(defs)) { // one order: the same weights every run
		d := defs[name]
		bits := 4
		if name == "sgate" && dc.gateBits != 0 {
			bits = dc.gateBits // MLX checkpoints keep it at 8 bits
		}
		wq[name] = &runtime.WeightData{Name: name, Out: d.out, In: d.in, Q: randQuant(r, bits, 64, d.out, d.in)}
	}
	n1, n2 := vec(H, 1.5), vec(H, 1.5)
	x0 := vec(H, 2)
	run := func(be runtime.Backend) [][]float32 {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", be.Name(), err)
			}
		}
		w := map[string]runtime.Weight{}
		for name, d := range wq {
			x, err := be.LoadWeight(d)
			must(err)
			w[name] = x
		}
		wn1, err := be.LoadWeight(&runtime.WeightData{Name: "n1", Out: 1, In: H, F: n1})
		must(err)
		wn2, err := be.LoadWeight(&runtime.WeightData{Name: "n2", Out: 1, In: H, F: n2})
		must(err)
		ten := func(cols int) runtime.Tensor {
			x, err := be.NewTensor(1, cols)
			must(err)
			return x
		}
		x, tt, a, bq, c, mix, moe := ten(H), ten(H), ten(Q), ten(64), ten(Q), ten(H), ten(H)
		sg, su, sd, sgt := ten(S), ten(S), ten(H), ten(1)
		must(be.Upload(x, x0))
		var outs [][]float32
		for step := 0; step < dc.steps; step++ {
			must(be.RMSNorm(tt, x, wn1, 1e-6))
			must(be.MatMul(a, w["qa"], tt))
			must(be.MatMul(bq, w["qb"], tt))
			must(be.MatMul(c, w["qc"], tt))
			must(be.SwiGLU(a, a, c))
			must(be.MatMul(mix, w["o"], a))
			must(be.Add(x, mix))
			must(be.RMSNorm(tt, x, wn2, 1e-6))
			must(be.MoE(context.Background(), moe, tt, w["router"], src, runtime.MoEParams{Layer: step % 2, NumExperts: E, TopK: K}, nil))
			must(be.MatMul(sg, w["sg"], tt))
			must(be.MatMul(su, w["su"], tt))
			must(be.SwiGLU(sg, sg, su))
			must(be.MatMul(sd, w["sd"], sg))
			must(be.MatMul(sgt, w["sgate"], tt))
			must(be.SigmoidGateAdd(moe, sd, sgt))
			must(be.Add(x, moe))
			for _, v := range []runtime.Tensor{x, tt, a, bq, c, mix, moe, sg, su, sd, sgt} {
				o := make([]float32, v.Rows()*v.Cols())
				must(be.Download(v, o))
				outs = append(outs, o)
			}
		}
		return outs
	}
	return &steps{run: run, names: []string{"x", "t", "a", "b", "c", "mix", "moe", "sg", "su", "sd", "sgate"}, gate: wq["sgate"].Q}
}

// steps is fusedSteps' case: its runner, the names of the tensors of a step
// (run returns them step after step), the shared expert's gate row and,
// where the caller ran it (qmxeSteps), the CPU backend's result.
type steps struct {
	run   func(be runtime.Backend) [][]float32
	names []string
	gate  *quant.Matrix
	want  [][]float32
}

// check fails t when a tensor of got differs from want by more than tol
// relative to its scale.
func (s *steps) check(t *testing.T, label string, got, want [][]float32, tol float64) {
	t.Helper()
	for i := range want {
		_, e, _ := closeTo(got[i], want[i], tol)
		if sc := s.scale(want, i); e > tol*sc || sc == 0 {
			t.Fatalf("%s: step %d %s: max error %g of scale %g", label, i/len(s.names), s.names[i%len(s.names)], e, sc)
		}
	}
}

// scale is the magnitude against which tensor i of fusedSteps' output
// is compared: its largest reference value, and for the one-value sigmoid
// gate logit g = w·t (w the gate row, t the step's post-norm output, both
// of the reference) Σ|w_k·t_k|: rounding and the propagated differences of
// t scale with the terms, and the sum may cancel to near zero (it did: a
// logit of 0.013, correct to 1.6e-6, failed a bound relative to itself).
func (s *steps) scale(want [][]float32, i int) float64 {
	_, _, ref := closeTo(want[i], want[i], 0)
	if s.names[i%len(s.names)] != "sgate" {
		return ref
	}
	tt := want[i-i%len(s.names)+slices.Index(s.names, "t")]
	w := make([]float32, s.gate.Cols)
	s.gate.DequantizeRow(w, 0)
	terms := 0.0
	for k := range w {
		terms += math.Abs(float64(w[k]) * float64(tt[k]))
	}
	return math.Max(ref, terms)
}

// logOutputs logs (with -v) a hash of a configuration's outputs and its
// worst relative error: repeated runs show whether the GPU's results vary.
func (s *steps) logOutputs(t *testing.T, config int, got, want [][]float32) {
	h := fnv.New64a()
	worst, at := 0.0, ""
	for i := range got {
		binary.Write(h, binary.LittleEndian, got[i])
		_, e, _ := closeTo(got[i], want[i], 0)
		if sc := s.scale(want, i); sc != 0 && e/sc > worst {
			worst, at = e/sc, fmt.Sprintf("step %d %s", i/len(s.names), s.names[i%len(s.names)])
		}
	}
	t.Logf("config %d: outputs %016x, worst relative error %.3g (%s)", config, h.Sum64(), worst, at)
}

// TestFusedDecode runs fusedSteps on the CPU backend and on CUDA with and
// without the fusions of fuse.go and compares every intermediate tensor.
func TestFusedDecode(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	fs := fusedSteps(t, 31, decodeCase{H: 1024, Q: 768, S: 256, E: 8, K: 2, I: 256, steps: 4})
	cb := cpu.New()
	want := fs.run(cb)
	cb.Close()
	defer func(v string, r bool, m int, x, xi string) {
		QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin, QMX, QMXI = v, r, m, x, xi
	}(QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin, QMX, QMXI)
	v0, r0, m0 := QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin
	t.Setenv("FMOE_CUDA_QMX", "") // QMX below decides
	os.Unsetenv("FMOE_CUDA_QMX")
	t.Setenv("FMOE_CUDA_QMXI", "") // QMXI below decides
	os.Unsetenv("FMOE_CUDA_QMXI")
	only := os.Getenv("FMOE_TEST_FUSED_CONFIGS") // e.g. "0,2": run only these (repeated runs of one)
	for i, opts := range []Options{{}, {NoFusion: true}, {NoGraphs: true}, {NoGraphs: true}, {MaskDequant: true}, {MaskDequant: true},
		{}, {NoGraphs: true}, {}, {}, {}, {NoGraphs: true}, {}} {
		QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin, QMX, QMXI = v0, r0, m0, "", ""
		switch i {
		case 3:
			QMVBVariant = "o" // the fused kernel capped at 96 registers
		case 5:
			QMVBWarpRows, QMVBWarpRowsMin = true, 1 // every batch that can runs one warp per 8 rows
		case 6, 7:
			QMX = "8p" // the persistent kernel (rows of 1024 columns: 32 threads per row)
		case 8:
			QMX = "4n"
		case 9:
			QMX = "4p"
		case 10:
			QMX, QMXI = "8p", "p" // the integer tensor-core kernel where it applies
		case 11:
			QMX, QMXI = "8p", "cn"
		case 12:
			QMX, QMXI = "8p", "cp"
		}
		if only != "" && !slices.Contains(strings.Split(only, ","), strconv.Itoa(i)) {
			continue
		}
		g := openOrSkip(t, opts)
		got := fs.run(g)
		g.Close()
		fs.logOutputs(t, i, got, want)
		fs.check(t, fmt.Sprintf("%+v (qmvb variant %q, warp rows %v from %d, qmx %q, qmxi %q)", opts, QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin, QMX, QMXI), got, want, 1e-4)
	}
}

// TestFusedDecodeRepeatable: the kernels have no float atomics and add in
// fixed orders, so two runs of the same steps on fresh backends give the
// same bits (a race would show here before it crossed a tolerance).
func TestFusedDecodeRepeatable(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	fs := fusedSteps(t, 31, decodeCase{H: 1024, Q: 768, S: 256, E: 8, K: 2, I: 256, steps: 4})
	var first [][]float32
	for run := 0; run < 3; run++ {
		g := openOrSkip(t, Options{})
		got := fs.run(g)
		g.Close()
		if first == nil {
			first = got
			continue
		}
		for i := range got {
			for j := range got[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(first[i][j]) {
					t.Fatalf("run %d: step %d %s[%d] = %g, the first run gave %g", run, i/len(fs.names), fs.names[i%len(fs.names)], j, got[i][j], first[i][j])
				}
			}
		}
	}
}

// qmxeSteps skips without CUDA, turns the one-token expert kernels on (qmx
// 8p, qmxe) for the test, and returns fusedSteps' case with the CPU
// backend's tensors.
func qmxeSteps(t *testing.T, seed uint64, dc decodeCase) *steps {
	t.Helper()
	openOrSkip(t, Options{}).Close()
	q := QMX
	t.Cleanup(func() { QMX = q })
	QMX = "8p"
	t.Setenv("FMOE_CUDA_QMXE", "1")
	fs := fusedSteps(t, seed, dc)
	cb := cpu.New()
	fs.want = fs.run(cb)
	cb.Close()
	return fs
}

// TestMergedShared runs fusedSteps where the shared expert has the routed
// experts' shape and every expert is resident, so each step's MoE runs with
// its shared expert merged into qmxe/qmxd (fuse_moe.go), with graphs on and
// off, and compares every tensor with the CPU backend and with the merge off,
// for both down-projection kernels (qmxd, qmxs).
func TestMergedShared(t *testing.T) {
	for _, gb := range []int{4, 8} { // the sigmoid gate row at 4 bits, and at 8 as in MLX checkpoints
		fs := qmxeSteps(t, 61, decodeCase{H: 1024, Q: 512, S: 1024, E: 8, K: 4, I: 1024, steps: 4, gateBits: gb})
		for _, c := range []struct {
			opts      Options
			merge, dn string
		}{{Options{}, "1", "walk"}, {Options{}, "1", "split"}, {Options{NoGraphs: true}, "1", "split"}, {Options{}, "0", "split"}} {
			t.Setenv("FMOE_CUDA_SHARED", c.merge)
			t.Setenv("FMOE_CUDA_QMXD", c.dn)
			g := openOrSkip(t, c.opts)
			got := fs.run(g)
			merged := g.fz.merged
			g.Close()
			label := fmt.Sprintf("gate %d-bit %+v merge %s down %s", gb, c.opts, c.merge, c.dn)
			fs.check(t, label, got, fs.want, 1e-4)
			if (merged > 0) != (c.merge == "1") {
				t.Fatalf("%s: %d merged launches", label, merged)
			}
		}
	}
}

// TestSplitMoE runs fusedSteps with a GPU expert cache too small for the
// experts of both layers, so that decode steps find some of their experts
// resident and some not: their MoE is split (moeSplit: the resident experts
// run while the missing ones are copied, the shared expert's projections are
// queued in between) and must match the CPU backend, with fusions on and off.
func TestSplitMoE(t *testing.T) {
	fs := qmxeSteps(t, 41, decodeCase{H: 1024, Q: 512, S: 512, E: 12, K: 4, I: 1024, steps: 12})
	for i, opts := range []Options{{CacheExperts: 6, NoLayerFill: true}, {CacheExperts: 6, NoLayerFill: true}, {CacheExperts: 6, NoLayerFill: true, NoFusion: true}} {
		t.Setenv("FMOE_CUDA_QMXD", []string{"split", "walk", "split"}[i])
		g := openOrSkip(t, opts)
		got := fs.run(g)
		st := g.Stats()
		g.Close()
		fs.check(t, fmt.Sprintf("%+v down %s", opts, os.Getenv("FMOE_CUDA_QMXD")), got, fs.want, 1e-4)
		t.Logf("%+v: hits %d misses %d split %d", opts, st.Hits, st.Misses, st.Split)
		if st.Split == 0 {
			t.Fatalf("%+v: no MoE call was split (hits %d, misses %d)", opts, st.Hits, st.Misses)
		}
	}
}

// TestQMXShapes checks the persistent fused decode matvec (qmx) on every
// row width it takes (32, 64, 128·CPT threads per row) and bit width,
// against the CPU backend: an RMSNorm folded into two matvecs sharing its
// output (norm mode, two items), and one matvec with a residual add.
func TestQMXShapes(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	defer func(x, xi string) { QMX, QMXI = x, xi }(QMX, QMXI)
	t.Setenv("FMOE_CUDA_QMX", "")
	os.Unsetenv("FMOE_CUDA_QMX")
	t.Setenv("FMOE_CUDA_QMXI", "")
	os.Unsetenv("FMOE_CUDA_QMXI")
	r := rand.New(rand.NewPCG(41, 42))
	type shape struct{ bits, in int }
	var shapes []shape
	for _, bits := range []int{2, 4, 8} {
		for _, in := range []int{1024, 2048, 4096, 8192, 16384} {
			if _, _, ok := qmxPlan(bits, 64, in); ok {
				shapes = append(shapes, shape{bits, in})
			}
		}
	}
	if len(shapes) < 10 {
		t.Fatalf("only %d qmx shapes: %v", len(shapes), shapes)
	}
	vec := func(n int, s float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = s * (2*r.Float32() - 1)
		}
		return v
	}
	for _, sh := range shapes {
		const o1, o2 = 333, 70
		w1 := &runtime.WeightData{Name: "w1", Out: o1, In: sh.in, Q: randQuant(r, sh.bits, 64, o1, sh.in)}
		w2 := &runtime.WeightData{Name: "w2", Out: o2, In: sh.in, Q: randQuant(r, sh.bits, 64, o2, sh.in)}
		w3 := &runtime.WeightData{Name: "w3", Out: o1, In: sh.in, Q: randQuant(r, sh.bits, 64, o1, sh.in)}
		nw, x0, res := vec(sh.in, 1.5), vec(sh.in, 2), vec(o1, 1)
		x0[7], x0[sh.in-3] = 250, -180 // outliers: qmxi scales x by its largest |x|
		run := func(be runtime.Backend) [][]float32 {
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s %+v: %v", be.Name(), sh, err)
				}
			}
			ld := func(d *runtime.WeightData) runtime.Weight {
				w, err := be.LoadWeight(d)
				must(err)
				return w
			}
			ten := func(cols int) runtime.Tensor {
				x, err := be.NewTensor(1, cols)
				must(err)
				return x
			}
			W1, W2, W3 := ld(w1), ld(w2), ld(w3)
			N := ld(&runtime.WeightData{Name: "n", Out: 1, In: sh.in, F: nw})
			x, tn, y1, y2, y3, acc := ten(sh.in), ten(sh.in), ten(o1), ten(o2), ten(o1), ten(o1)
			must(be.Upload(x, x0))
			must(be.Upload(acc, res))
			must(be.RMSNorm(tn, x, N, 1e-6))
			must(be.MatMul(y1, W1, tn))
			must(be.MatMul(y2, W2, tn))
			must(be.MatMul(y3, W3, x))
			must(be.Add(acc, y3))
			var outs [][]float32
			for _, v := range []runtime.Tensor{tn, y1, y2, y3, acc} {
				o := make([]float32, v.Rows()*v.Cols())
				must(be.Download(v, o))
				outs = append(outs, o)
			}
			return outs
		}
		cb := cpu.New()
		want := run(cb)
		cb.Close()
		for _, v := range []string{"8p", "8n", "4p", "4n", "ip", "in", "icp", "icn"} {
			QMX, QMXI = v, ""
			if v[0] == 'i' {
				QMX, QMXI = "8p", v[1:]
			}
			g := openOrSkip(t, Options{NoGraphs: true})
			got := run(g)
			g.Close()
			for i := range want {
				if ok, e, ref := closeTo(got[i], want[i], 2e-5); !ok {
					t.Fatalf("%+v qmx %s: output %d: max error %g of max |ref| %g", sh, v, i, e, ref)
				}
			}
		}
	}
}

// TestRouteOverride: the benchmarks' routing override (fmoe bench --routing
// uniform|skewed) gives the same steps whether the fused router launch
// replaces its picks from pinned memory (graphs on and off) or a copy after
// an unfused router does; the ids change every step, so a stale read would
// show; and the steps differ from the router's own picks.
func TestRouteOverride(t *testing.T) {
	dc := decodeCase{H: 1024, Q: 512, S: 512, E: 12, K: 4, I: 1024, steps: 6}
	fs := qmxeSteps(t, 43, dc)
	calls := 0
	override := func(g *Backend) {
		n := 0
		g.SetRouteOverride(func(layer, tokens, topK int, ids []int32) {
			for i := range ids {
				ids[i] = int32((5*n + 3*i) % dc.E) // K distinct ids, another set each call
			}
			n++
			calls++
		})
	}
	var ref [][]float32
	for _, opts := range []Options{{NoFusion: true}, {}, {NoGraphs: true}} {
		g := openOrSkip(t, opts)
		override(g)
		got := fs.run(g)
		g.Close()
		if ref == nil {
			ref = got
			continue
		}
		fs.check(t, fmt.Sprintf("override %+v", opts), got, ref, 1e-4)
	}
	if calls < 3*dc.steps {
		t.Fatalf("override called %d times for 3 runs of %d steps", calls, dc.steps)
	}
	g := openOrSkip(t, Options{})
	plain := fs.run(g)
	g.Close()
	for i := range plain {
		if ok, _, _ := closeTo(plain[i], ref[i], 1e-3); !ok {
			return // the override changed the experts
		}
	}
	t.Fatal("the steps with the routing override equal the router's own")
}
