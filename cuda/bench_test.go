package cuda

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/fmoe/fmoe/quant"
	"github.com/fmoe/fmoe/runtime"
)

// gpuMillis times n runs of f (on the worker) with GPU events, after one warm-up.
func gpuMillis(tb testing.TB, be *Backend, n int, f func() error) float64 {
	tb.Helper()
	var ms float32
	err := be.run(func() error {
		if err := f(); err != nil {
			return err
		}
		s, err := be.d.eventCreate()
		if err != nil {
			return err
		}
		e, err := be.d.eventCreate()
		if err != nil {
			return err
		}
		defer be.d.eventDestroy(s)
		defer be.d.eventDestroy(e)
		if err := be.d.eventRecord(s); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := f(); err != nil {
				return err
			}
		}
		if err := be.d.eventRecord(e); err != nil {
			return err
		}
		ms, err = be.d.eventElapsed(s, e)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return float64(ms) / float64(n)
}

// BenchmarkCopyD2D measures HBM bandwidth with a 1 GiB device copy (bytes read + written).
func BenchmarkCopyD2D(b *testing.B) {
	be := openOrSkip(b, Options{NoGraphs: true})
	defer be.Close()
	const n = 1 << 30
	var src, dst uintptr
	if err := be.run(func() (err error) {
		if src, err = be.alloc(n); err != nil {
			return err
		}
		dst, err = be.alloc(n)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ms := gpuMillis(b, be, 10, func() error { return be.d.dtod(dst, src, n) })
		b.ReportMetric(2*n/ms/1e6, "GB/s")
	}
}

// BenchmarkCopyH2D measures pinned host-to-device bandwidth (256 MiB).
func BenchmarkCopyH2D(b *testing.B) {
	be := openOrSkip(b, Options{NoGraphs: true})
	defer be.Close()
	const n = 256 << 20
	var dst uintptr
	var h unsafe.Pointer
	if err := be.run(func() (err error) {
		if dst, err = be.alloc(n); err != nil {
			return err
		}
		h, err = be.d.hostAlloc(n)
		be.hosts = append(be.hosts, h)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		ms := gpuMillis(b, be, 10, func() error { return be.d.htodAsync(dst, h, n) })
		b.ReportMetric(n/ms/1e6, "GB/s")
	}
}

// randQuant returns a quantized matrix with random codes and plausible scales.
func randQuant(r *rand.Rand, bits, group, rows, cols int) *quant.Matrix {
	m := &quant.Matrix{Bits: bits, GroupSize: group, Rows: rows, Cols: cols}
	m.W = make([]uint32, rows*m.WordsPerRow())
	for i := range m.W {
		m.W[i] = r.Uint32()
	}
	m.Scales = make([]uint16, rows*m.GroupsPerRow())
	m.Biases = make([]uint16, len(m.Scales))
	for i := range m.Scales {
		m.Scales[i] = quant.F32ToBF16(0.001 + 0.01*r.Float32())
		m.Biases[i] = quant.F32ToBF16(-0.05 * r.Float32())
	}
	return m
}

// BenchmarkQMatVec: fused 4-bit dequant matvec (decode, T=1) and batches of
// 8, 32 and 64 tokens (tensor-core qmma, fp32 tiled GEMM, the older kernel), 4 matrices of 16384×4096 rotated so L2 does not hold them. GB/s
// counts weight bytes (codes, scales, biases) read once per token batch.
func BenchmarkQMatVec(b *testing.B) {
	be := openOrSkip(b, Options{NoGraphs: true})
	defer be.Close()
	r := rand.New(rand.NewPCG(1, 2))
	const rows, cols = 16384, 4096
	var ws []*Weight
	for i := 0; i < 4; i++ {
		w, err := be.LoadWeight(&runtime.WeightData{Name: "w", Out: rows, In: cols, Q: randQuant(r, 4, 64, rows, cols)})
		if err != nil {
			b.Fatal(err)
		}
		ws = append(ws, w.(*Weight))
	}
	wbytes := float64(rows*cols/2 + 2*rows*cols/64*2)
	saveV, saveG, saveM, saveT, saveW := QMVVariant, GemmMinTokens, QMMA, QMMAMT, QMMAWG
	defer func() { QMVVariant, GemmMinTokens, QMMA, QMMAMT, QMMAWG = saveV, saveG, saveM, saveT, saveW }()
	type variant struct {
		name, qmv string
		gemmFrom  int
		fp32      bool // the fp32 tiled GEMM, not the tensor cores
		mt        int  // qmma's 16-row tiles per warp
		wg        bool // qmmw4 (warpgroup MMA, sm_90a)
	}
	var cases []struct {
		T int
		v variant
	}
	for _, v := range append([]string{""}, qmvVariants...) {
		name := "qmv=" + v
		if v == "" {
			name = "old"
		}
		cases = append(cases, struct {
			T int
			v variant
		}{1, variant{name, v, 2, false, 1, false}})
	}
	for _, T := range []int{8, 32, 64, 128} {
		vs := []variant{{"qmma", saveV, 2, false, 1, false}, {"qmma-m2", saveV, 2, false, 2, false}}
		if be.d.wgmma() {
			vs = append(vs, variant{"qmma-wg", saveV, 2, false, 2, true})
		}
		if T <= 64 {
			vs = append(vs, variant{"gemm", saveV, 2, true, 1, false}, variant{"old", saveV, 1 << 30, true, 1, false})
		}
		for _, v := range vs {
			cases = append(cases, struct {
				T int
				v variant
			}{T, v})
		}
	}
	for _, cs := range cases {
		T := cs.T
		b.Run(fmt.Sprintf("T=%d/%s", T, cs.v.name), func(b *testing.B) {
			QMVVariant, GemmMinTokens, QMMA, QMMAMT, QMMAWG = cs.v.qmv, cs.v.gemmFrom, !cs.v.fp32, cs.v.mt, cs.v.wg
			x, _ := be.NewTensor(T, cols)
			y, _ := be.NewTensor(T, rows)
			xv := make([]float32, T*cols)
			for i := range xv {
				xv[i] = r.Float32()*2 - 1
			}
			be.Upload(x, xv)
			i := 0
			for b.Loop() {
				ms := gpuMillis(b, be, 40, func() error {
					i++
					return be.matmul(y.(*Tensor).p, ws[i%4], x.(*Tensor).p, T)
				})
				b.ReportMetric(wbytes/ms/1e6, "GB/s")
				b.ReportMetric(ms*1e3, "us/matmul")
			}
		})
	}
}

// memSource serves random experts from host memory.
type memSource struct {
	l    runtime.ExpertLayout
	data [][]byte
}

func (m *memSource) Layout() runtime.ExpertLayout { return m.l }
func (m *memSource) ReadExperts(ctx context.Context, layer int, ids []int, dst [][]byte) error {
	for i, id := range ids {
		copy(dst[i], m.data[id])
	}
	return ctx.Err()
}

func newMemSource(tb testing.TB, r *rand.Rand, E int) *memSource {
	return newMemSourceDims(tb, r, E, 4096, 1024, 4, 64)
}

func newMemSourceDims(tb testing.TB, r *rand.Rand, E, hidden, inter, bits, group int) *memSource {
	l, err := runtime.PackedExpertLayout(hidden, inter, bits, group)
	if err != nil {
		tb.Fatal(err)
	}
	m := &memSource{l: l}
	for e := 0; e < E; e++ {
		buf := make([]byte, l.Size)
		for _, p := range []runtime.ProjLayout{l.Gate, l.Up, l.Down} {
			q := randQuant(r, bits, group, p.Out, p.In)
			copy(buf[p.WOffset:], unsafe.Slice((*byte)(unsafe.Pointer(&q.W[0])), p.WSize))
			copy(buf[p.SOffset:], unsafe.Slice((*byte)(unsafe.Pointer(&q.Scales[0])), p.SSize))
			copy(buf[p.BOffset:], unsafe.Slice((*byte)(unsafe.Pointer(&q.Biases[0])), p.BSize))
		}
		m.data = append(m.data, buf)
	}
	return m
}

// BenchmarkMoE: one MoE block of the 397B shape (hidden 4096, experts of
// 7,077,888 bytes, 64 experts per layer, 4 layers rotated) at K=4 and K=10,
// all experts resident (a) or with a 16-expert GPU cache fed from host
// memory through pinned buffers (b). GB/s counts routed expert bytes.
func BenchmarkMoE(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	const E, layers = 64, 4
	src := newMemSource(b, r, E)
	for _, mode := range []struct {
		name string
		opts Options
	}{{"resident", Options{NoGraphs: true}}, {"resident-old", Options{NoBatchedMoE: true, NoGraphs: true}}, {"cache16", Options{CacheExperts: 16, NoLayerFill: true, NoGraphs: true}},
		{"cache16-host", Options{CacheExperts: 16, NoLayerFill: true, HostCacheBytes: 64 * 4 * 7077888}}} {
		be := openOrSkip(b, mode.opts)
		router, err := be.LoadWeight(&runtime.WeightData{Name: "router", Out: E, In: 4096, Q: randQuant(r, 8, 64, E, 4096)})
		if err != nil {
			b.Fatal(err)
		}
		for _, K := range []int{4, 10} {
			for _, T := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/K=%d/T=%d", mode.name, K, T), func(b *testing.B) {
					x, _ := be.NewTensor(T, 4096)
					y, _ := be.NewTensor(T, 4096)
					xv := make([]float32, T*4096)
					for i := range xv {
						xv[i] = r.Float32()*2 - 1
					}
					be.Upload(x, xv)
					layer := 0
					step := func() error {
						layer++
						return be.moe1(context.Background(), y.(*Tensor), x.(*Tensor), router.(*Weight), src,
							runtime.MoEParams{Layer: layer % layers, NumExperts: E, TopK: K}, nil, nil)
					}
					for l := 0; l < layers; l++ { // fill
						if err := be.run(step); err != nil {
							b.Fatal(err)
						}
					}
					for b.Loop() {
						ms := gpuMillis(b, be, 20, step)
						b.ReportMetric(float64(T*K)*float64(src.l.Size)/ms/1e6, "GB/s(uses)")
						b.ReportMetric(ms*1e3, "us/layer")
					}
				})
			}
		}
		st := be.Stats()
		b.Logf("%s: hits %d misses %d loads %d host loads %d syncs %d slots %d host slots %d", mode.name, st.Hits, st.Misses, st.Loads, st.HostLoads, st.Syncs, st.Slots, st.HostSlots)
		be.Close()
	}
}

// decodeShapeVariants: FMOE_BENCH_VARIANTS (comma-separated) or the default set.
func decodeShapeVariants() []string {
	if v := os.Getenv("FMOE_BENCH_VARIANTS"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"r8u1", "k8", "qmvb", "qmx8p", "qmx8n", "qmx4p", "qmx4n", "qmxip", "qmxin", "qmxicp", "qmxicn"}
}

// BenchmarkDecodeShapes: the decode matvec variants on every matrix shape of
// a 397B decode token (GatedDeltaNet qkv/z/b/out, attention q/k/o, shared
// expert, router), 4-bit g64, enough copies rotated (≥ 256 MB) that L2 does
// not hold them; qmvb/qmvbo = the fused decode kernel (fuse.go) with one item.
// FMOE_CUDA_DQ=1 measures the masked-subnormal dequantization. Reports µs per matvec
// and weight GB/s.
func BenchmarkDecodeShapes(b *testing.B) {
	be := openOrSkip(b, Options{NoGraphs: true})
	defer be.Close()
	r := rand.New(rand.NewPCG(3, 4))
	saveV := QMVVariant
	defer func() { QMVVariant = saveV }()
	for _, sh := range [][2]int{{12288, 4096}, {8192, 4096}, {4096, 8192}, {16384, 4096}, {1024, 4096}, {4096, 1024}, {512, 4096}, {64, 4096}} {
		rows, cols := sh[0], sh[1]
		wbytes := float64(rows*cols/2 + 2*rows*cols/64*2)
		n := max(2, min(64, int(256e6/wbytes)))
		q := randQuant(r, 4, 64, rows, cols)
		var ws []*Weight
		for i := 0; i < n; i++ {
			w, err := be.LoadWeight(&runtime.WeightData{Name: "w", Out: rows, In: cols, Q: q})
			if err != nil {
				b.Fatal(err)
			}
			ws = append(ws, w.(*Weight))
		}
		x, _ := be.NewTensor(1, cols)
		y, _ := be.NewTensor(1, rows)
		xt, yt := x.(*Tensor), y.(*Tensor)
		for _, v := range decodeShapeVariants() {
			b.Run(fmt.Sprintf("%dx%d/%s", rows, cols, v), func(b *testing.B) {
				QMVVariant = v
				step := func(w *Weight) error { return be.matmul(yt.p, w, xt.p, 1) }
				if strings.HasPrefix(v, "qmxi") {
					// qmxi (qmx.go), its variant after the name: qmxip, qmxicn
					os.Setenv("FMOE_CUDA_QMXI", v[4:])
					defer os.Unsetenv("FMOE_CUDA_QMXI")
					v = "qmx8p"
				}
				if strings.HasPrefix(v, "qmx") {
					// the persistent fused kernel (qmx.go), tile and prefetch after the name
					os.Setenv("FMOE_CUDA_QMX", v[3:])
					defer os.Unsetenv("FMOE_CUDA_QMX")
					if os.Getenv("FMOE_CUDA_QMXI") == "" {
						os.Setenv("FMOE_CUDA_QMXI", "0")
						defer os.Unsetenv("FMOE_CUDA_QMXI")
					}
					v = "qmvb"
				}
				if strings.HasPrefix(v, "qmvb") {
					// the fused decode kernel (one item), as fuse.go launches it:
					// qmvb = 128 registers, o = at most 96, r = warp rows where they apply
					QMVVariant = saveV
					if os.Getenv("FMOE_CUDA_QMX") == "" {
						os.Setenv("FMOE_CUDA_QMX", "0")
						defer os.Unsetenv("FMOE_CUDA_QMX")
					}
					os.Setenv("FMOE_CUDA_QMVB", strings.TrimSuffix(v[4:], "r"))
					os.Setenv("FMOE_CUDA_QMVB_ROWS", map[bool]string{true: "1", false: "0"}[strings.HasSuffix(v, "r")])
					defer os.Unsetenv("FMOE_CUDA_QMVB")
					defer os.Unsetenv("FMOE_CUDA_QMVB_ROWS")
					step = func(w *Weight) error {
						if _, err := be.fuseMatMul(yt, w, xt); err != nil {
							return err
						}
						return be.flush()
					}
				}
				if err := be.run(func() error { // descriptors uploaded outside the timing
					for _, w := range ws {
						if err := step(w); err != nil {
							return err
						}
					}
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					i := 0
					ms := gpuMillis(b, be, 8*n, func() error { i++; return step(ws[i%n]) })
					b.ReportMetric(ms*1e3, "µs")
					b.ReportMetric(wbytes/ms/1e6, "GB/s")
				}
			})
		}
		be.run(func() error {
			for _, w := range ws {
				for _, p := range []uintptr{w.w, w.s, w.z} {
					be.release(p)
				}
			}
			return nil
		})
	}
}

// BenchmarkStepLatency measures what one dependent step of a decode token
// costs, apart from its work: a chain of 437 launches (a resident 397B-shape
// token's count) of a kernel that only reads what the step before wrote, in
// CUDA graphs with programmatic dependent launch as decode runs them
// ("graph") and issued one by one ("eager"), against the same 437 steps in
// one persistent launch separated by grid-wide barriers ("barrier"). blocks
// = blocks per step (one or four per SM). Reports µs per step.
func BenchmarkStepLatency(b *testing.B) {
	const steps = 437
	for _, mode := range []string{"graph", "eager", "barrier"} {
		for _, per := range []int{1, 4} {
			if mode == "barrier" && per > 1 {
				continue // every block of a barrier kernel must be resident: one per SM
			}
			b.Run(fmt.Sprintf("%s/blocks=%dxSM", mode, per), func(b *testing.B) {
				be := openOrSkip(b, Options{NoGraphs: mode != "graph"})
				defer be.Close()
				n := per * be.d.sms
				var buf, bar uintptr
				if err := be.run(func() (err error) {
					if buf, err = be.alloc(2 * n * 4); err != nil {
						return err
					}
					if bar, err = be.alloc(8); err != nil {
						return err
					}
					if err := be.d.memset(buf, 2*n*4); err != nil {
						return err
					}
					return be.d.memset(bar, 8)
				}); err != nil {
					b.Fatal(err)
				}
				chain := func() error {
					if mode == "barrier" {
						return be.d.launch(be.fn["barrier_probe"], grid1(n), [3]int{128, 1, 1}, 0, buf, bar, steps)
					}
					for i := 0; i < steps; i++ {
						if err := be.d.launch(be.fn["step_probe"], grid1(n), [3]int{128, 1, 1}, 0, buf, i); err != nil {
							return err
						}
					}
					return nil
				}
				for b.Loop() {
					ms := gpuMillis(b, be, 1, chain)
					b.ReportMetric(ms*1e3/steps, "µs/step")
				}
				if g := be.d.graphs; g != nil {
					b.ReportMetric(float64(g.Replays), "graph-launches")
				}
			})
		}
	}
}
