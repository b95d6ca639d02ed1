package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
)

// mixerRig runs a prompt and then decode steps of attention and
// GatedDeltaNet at the 397B head sizes (head_dim 256; 128×128 delta state)
// on one backend, returning every step's outputs.
type mixerRig struct {
	ap                       runtime.AttentionParams
	dp                       runtime.DeltaParams
	qn, kn, conv, dt, al, nm []float32
	steps                    []int // tokens per call
	in                       [][]float32
}

func newMixerRig(r *rand.Rand) *mixerRig {
	m := &mixerRig{
		ap:    runtime.AttentionParams{Heads: 8, KVHeads: 2, HeadDim: 256, RotaryDim: 64, RopeTheta: 1e7, Eps: 1e-6},
		dp:    runtime.DeltaParams{KeyHeads: 2, ValueHeads: 4, KeyDim: 128, ValueDim: 128, ConvKernel: 4, Eps: 1e-6},
		steps: []int{37, 1, 1, 1, 1, 1, 1, 5, 1, 1, 1, 130, 1}, // 130: a step of more than the CUDA prefill batch (128)
	}
	vec := func(n int, s float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = s * (2*r.Float32() - 1)
		}
		return v
	}
	m.qn, m.kn = vec(256, 1.5), vec(256, 1.5)
	C := m.dp.ConvDim()
	m.conv, m.dt, m.al, m.nm = vec(C*4, 0.8), vec(4, 1), vec(4, 1), vec(128, 1.5)
	for _, T := range m.steps {
		// qg, k, v, qkv, z, b, a
		m.in = append(m.in, vec(T*8*512, 2), vec(T*512, 2), vec(T*512, 2), vec(T*C, 2), vec(T*512, 2), vec(T*4, 3), vec(T*4, 3))
	}
	return m
}

func (m *mixerRig) run(t *testing.T, be runtime.Backend) [][]float32 {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", be.Name(), err)
		}
	}
	w := func(name string, out, in int, v []float32) runtime.Weight {
		x, err := be.LoadWeight(&runtime.WeightData{Name: name, Out: out, In: in, F: v})
		must(err)
		return x
	}
	qn, kn := w("q_norm", 1, 256, m.qn), w("k_norm", 1, 256, m.kn)
	C := m.dp.ConvDim()
	conv, dt, al, nm := w("conv", C, 4, m.conv), w("dt", 1, 4, m.dt), w("alog", 1, 4, m.al), w("norm", 1, 128, m.nm)
	kv, err := be.NewKVCache(m.ap, 256)
	must(err)
	st, err := be.NewDeltaState(m.dp)
	must(err)
	tens := map[[2]int]runtime.Tensor{}
	ten := func(i, rows, cols int, v []float32) runtime.Tensor {
		// one tensor per (slot, rows): decode steps reuse theirs, as the engine does
		x, ok := tens[[2]int{i, rows}]
		if !ok {
			x, err = be.NewTensor(rows, cols)
			must(err)
			tens[[2]int{i, rows}] = x
		}
		if v != nil {
			must(be.Upload(x, v))
		}
		return x
	}
	var outs [][]float32
	for si, T := range m.steps {
		in := m.in[si*7 : si*7+7]
		// Inputs first, then the launches, then the downloads: one segment
		// of launches per step, as in the engine's decode step.
		att, dn := ten(0, T, 8*256, nil), ten(1, T, 512, nil)
		qg, k, v := ten(2, T, 8*512, in[0]), ten(3, T, 512, in[1]), ten(4, T, 512, in[2])
		qkv, z, b, a := ten(5, T, C, in[3]), ten(6, T, 512, in[4]), ten(7, T, 4, in[5]), ten(8, T, 4, in[6])
		must(be.Attention(att, qg, k, v, kv, qn, kn, m.ap))
		must(be.DeltaNet(dn, qkv, z, b, a, st, conv, dt, al, nm, m.dp))
		for _, x := range []runtime.Tensor{att, dn} {
			o := make([]float32, x.Rows()*x.Cols())
			must(be.Download(x, o))
			outs = append(outs, o)
		}
	}
	return outs
}

// TestMixersLarge compares attention (split over positions, cache length in
// device memory) and both GatedDeltaNet kernels at the 397B head sizes with
// the CPU backend, and a run with CUDA graphs with one without, bit for bit.
func TestMixersLarge(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	m := newMixerRig(rand.New(rand.NewPCG(11, 12)))
	c := cpu.New()
	want := m.run(t, c)
	c.Close()
	if rows, rg := delta2Rows(128, 128); rows != 32 || rg != 4 {
		t.Fatalf("delta2Rows(128, 128) = %d, %d; want 32, 4", rows, rg)
	}
	var graphOut [][]float32
	for _, tc := range []struct {
		name   string
		opts   Options
		delta2 bool
		cols   bool // prompt steps (37, 130 tokens) on delta_conv_t, delta_qkg, delta_cols, delta_gnorm
	}{{"graphs", Options{}, true, true}, {"eager", Options{NoGraphs: true}, true, true},
		{"prompt steps on delta_rule2", Options{NoGraphs: true}, true, false},
		{"shared-memory delta", Options{NoGraphs: true}, false, false}} {
		disableDelta2, disableDeltaCols = !tc.delta2, !tc.cols
		g := openOrSkip(t, tc.opts)
		got := m.run(t, g)
		disableDelta2, disableDeltaCols = false, false
		if gr := g.d.graphs; gr != nil {
			t.Logf("%s: graph replays %d captures %d eager launches %d", tc.name, gr.Replays, gr.Captures, gr.Eager)
			if gr.Replays == 0 {
				t.Errorf("%s: no graph replays", tc.name)
			}
		}
		g.Close()
		for i := range want {
			if ok, e, ref := closeTo(got[i], want[i], 1e-4); !ok {
				t.Fatalf("%s: step %d %s: max error %g of max |ref| %g", tc.name, i/2, []string{"attention", "deltanet"}[i%2], e, ref)
			}
		}
		if tc.name == "graphs" {
			graphOut = got
		} else if tc.name == "eager" {
			for i := range got {
				for j := range got[i] {
					if got[i][j] != graphOut[i][j] {
						t.Fatalf("graphs and eager differ: step %d output %d element %d: %g vs %g", i/2, i%2, j, graphOut[i][j], got[i][j])
					}
				}
			}
		}
	}
}
