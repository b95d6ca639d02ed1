package cuda

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
)

// TestFusedDecode runs the engine's op sequence of a decode step (input
// norm and three projections of its output, output projection and residual,
// post norm and MoE, shared expert with SwiGLU, sigmoid gate and residual)
// for several steps on the CPU backend and on CUDA with and without the
// fusions of fuse.go, and compares every intermediate tensor.
func TestFusedDecode(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	r := rand.New(rand.NewPCG(31, 32))
	const H, Q, S, E, K, I = 1024, 768, 256, 8, 2, 256
	src := newMemSourceDims(t, r, E, H, I, 4, 64)
	vec := func(n int, s float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = s * (2*r.Float32() - 1)
		}
		return v
	}
	type wdef struct {
		out, in int
		f       []float32
	}
	wq := map[string]*runtime.WeightData{}
	for name, d := range map[string]wdef{"qa": {Q, H, nil}, "qb": {64, H, nil}, "qc": {Q, H, nil}, "o": {H, Q, nil},
		"router": {E, H, nil}, "sg": {S, H, nil}, "su": {S, H, nil}, "sd": {H, S, nil}, "sgate": {1, H, nil}} {
		wq[name] = &runtime.WeightData{Name: name, Out: d.out, In: d.in, Q: randQuant(r, 4, 64, d.out, d.in)}
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
		for step := 0; step < 4; step++ {
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
	cb := cpu.New()
	want := run(cb)
	cb.Close()
	names := []string{"x", "t", "a", "b", "c", "mix", "moe", "sg", "su", "sd", "sgate"}
	defer func(v string, r bool, m int) { QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin = v, r, m }(QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin)
	v0, r0, m0 := QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin
	for i, opts := range []Options{{}, {NoFusion: true}, {NoGraphs: true}, {NoGraphs: true}, {MaskDequant: true}, {MaskDequant: true}} {
		QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin = v0, r0, m0
		switch i {
		case 3:
			QMVBVariant = "o" // the fused kernel capped at 96 registers
		case 5:
			QMVBWarpRows, QMVBWarpRowsMin = true, 1 // every batch that can runs one warp per 8 rows
		}
		g := openOrSkip(t, opts)
		got := run(g)
		g.Close()
		for i := range want {
			var e, ref float64
			for j := range want[i] {
				e = math.Max(e, math.Abs(float64(got[i][j]-want[i][j])))
				ref = math.Max(ref, math.Abs(float64(want[i][j])))
			}
			if !(e <= 1e-4*ref) || ref == 0 {
				t.Fatalf("%+v (qmvb variant %q, warp rows %v from %d): step %d %s: max error %g of max |ref| %g", opts, QMVBVariant, QMVBWarpRows, QMVBWarpRowsMin, i/len(names), names[i%len(names)], e, ref)
			}
		}
	}
}
