package cuda

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"unsafe"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/backendtest"
	"github.com/fmoe/fmoe/runtime/cpu"
)

// openOrSkip opens a backend or skips the test when no GPU is usable here,
// unless FMOE_REQUIRE_CUDA=1 forbids skipping.
func openOrSkip(t testing.TB, opts Options) *Backend {
	t.Helper()
	b, err := Open(opts)
	if err != nil {
		if os.Getenv("FMOE_REQUIRE_CUDA") != "1" && (errors.Is(err, ErrNoCUDA) || errors.Is(err, ErrNoDevice)) {
			t.Skipf("no CUDA here: %v", err)
		}
		t.Fatalf("Open: %v", err)
	}
	return b
}

func TestConformance(t *testing.T) {
	b := openOrSkip(t, Options{})
	t.Logf("device %+v", b.Info())
	b.Close()
	backendtest.Run(t, func(t *testing.T) runtime.Backend { return openOrSkip(t, Options{}) })
}

// TestConformanceSmallCache runs the suite with a GPU expert cache of 16
// experts (the largest case's experts of one layer, half of two layers) and
// no whole-layer fill, so MoE goes through read-back, misses and eviction
// across layers. (A call that needs more distinct experts than the cache
// holds is split into token chunks and may read an expert twice, which the
// suite forbids; TestSmallCacheChunks covers that path.)
func TestConformanceSmallCache(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	var last *Backend
	backendtest.Run(t, func(t *testing.T) runtime.Backend {
		last = openOrSkip(t, Options{CacheExperts: 16, NoLayerFill: true})
		return statsLogger{last, t}
	})
}

// statsLogger logs the expert counters when the suite closes the backend.
type statsLogger struct {
	*Backend
	t *testing.T
}

func (s statsLogger) Close() error {
	st := s.Stats()
	if st.Slots > 0 {
		s.t.Logf("experts: hits %d misses %d loads %d evictions %d syncs %d slots %d", st.Hits, st.Misses, st.Loads, st.Evictions, st.Syncs, st.Slots)
		if st.Slots > 16 {
			s.t.Errorf("cache has %d slots, capped at 16", st.Slots)
		}
	}
	return s.Backend.Close()
}

func TestNoCUDAError(t *testing.T) {
	err := Available()
	if err == nil {
		t.Skip("CUDA libraries load here")
	}
	if !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("Available() = %v, want ErrNoCUDA", err)
	}
	if _, err := NewBackend(Options{}); !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("NewBackend without CUDA = %v, want ErrNoCUDA", err)
	}
}

// TestSmallCacheChunks: a 5-expert cache serving calls that need up to 16
// distinct experts (token chunks, eviction inside one call) must give the
// CPU backend's result.
func TestSmallCacheChunks(t *testing.T) {
	g := openOrSkip(t, Options{CacheExperts: 5, NoLayerFill: true})
	defer g.Close()
	c := cpu.New()
	defer c.Close()
	r := rand.New(rand.NewPCG(9, 9))
	const E, K, H, T = 16, 4, 64, 12
	src := newMemSourceDims(t, r, E, H, 32, 4, 32)
	rv := make([]float32, E*H)
	for i := range rv {
		rv[i] = r.Float32() - 0.5
	}
	xv := make([]float32, T*H)
	for i := range xv {
		xv[i] = 2*r.Float32() - 1
	}
	var outs [2][]float32
	for i, be := range []runtime.Backend{g, c} {
		router, err := be.LoadWeight(&runtime.WeightData{Name: "router", Out: E, In: H, F: rv})
		if err != nil {
			t.Fatal(err)
		}
		x, _ := be.NewTensor(T, H)
		y, _ := be.NewTensor(T, H)
		if err := be.Upload(x, xv); err != nil {
			t.Fatal(err)
		}
		for _, layer := range []int{0, 1, 0} {
			if err := be.MoE(context.Background(), y, x, router, src, runtime.MoEParams{Layer: layer, NumExperts: E, TopK: K}, nil); err != nil {
				t.Fatalf("%s: MoE: %v", be.Name(), err)
			}
		}
		outs[i] = make([]float32, T*H)
		if err := be.Download(y, outs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var maxErr, maxRef float64
	for i := range outs[0] {
		maxErr = math.Max(maxErr, math.Abs(float64(outs[0][i]-outs[1][i])))
		maxRef = math.Max(maxRef, math.Abs(float64(outs[1][i])))
	}
	if maxErr > 1e-4*maxRef || maxRef == 0 {
		t.Fatalf("cuda vs cpu: max error %g (max |ref| %g)", maxErr, maxRef)
	}
	st := g.Stats()
	t.Logf("experts: hits %d misses %d loads %d evictions %d syncs %d slots %d", st.Hits, st.Misses, st.Loads, st.Evictions, st.Syncs, st.Slots)
	if st.Evictions == 0 || st.Slots != 5 {
		t.Fatalf("expected evictions in a 5-slot cache: %+v", st)
	}
}

// TestMatMulKernels runs every decode matvec variant, the tiled GEMM (with
// and without split-K) and the older kernels against the CPU backend on
// random quantized matrices of several shapes and bit widths.
func TestMatMulKernels(t *testing.T) {
	g := openOrSkip(t, Options{})
	defer g.Close()
	c := cpu.New()
	defer c.Close()
	r := rand.New(rand.NewPCG(5, 6))
	saveV, saveG, saveM, saveS, saveT, saveP, saveW := QMVVariant, GemmMinTokens, QMMA, QMMASplitK, QMMAMT, QMMAParts, QMMAWG
	defer func() {
		QMVVariant, GemmMinTokens, QMMA, QMMASplitK, QMMAMT, QMMAParts, QMMAWG = saveV, saveG, saveM, saveS, saveT, saveP, saveW
	}()
	t.Logf("warpgroup MMA (qmmw4, sm_90a): %v", g.d.wgmma())
	for _, e := range []string{"FMOE_CUDA_QMMA", "FMOE_CUDA_QMMA_SPLIT", "FMOE_CUDA_QMMA_MT", "FMOE_CUDA_QMMA_PARTS", "FMOE_CUDA_QMMA_WG"} {
		t.Setenv(e, "")
		os.Unsetenv(e)
	}
	for _, bits := range []int{2, 4, 8} {
		for _, sh := range []struct{ rows, cols, group int }{{100, 512, 64}, {37, 256, 32}, {300, 4096, 64}, {64, 96, 32}, {130, 1024, 64}} {
			q := randQuant(r, bits, sh.group, sh.rows, sh.cols)
			wd := &runtime.WeightData{Name: "w", Out: sh.rows, In: sh.cols, Q: q}
			gw, cw := loadOn(t, g, wd), loadOn(t, c, wd)
			for _, T := range []int{1, 3, 8, 17, 40, 77} {
				xv := make([]float32, T*sh.cols)
				for i := range xv {
					xv[i] = 2*r.Float32() - 1
				}
				want := matmulOn(t, c, cw, xv, T, sh.rows, sh.cols)
				variants := []string{""}
				if T == 1 {
					variants = append(variants, qmvVariants...)
				}
				// the tensor-core GEMM (4-bit, groups of 64; columns split
				// or not) and the fp32 one
				type mm struct {
					on, split bool
					mt        int // 16-row tiles per warp
					parts     int // bf16 parts of x (mt 2)
					wg        bool
				}
				mmas := []mm{{false, false, 1, 3, false}}
				if bits == 4 && sh.group == 64 && T > 1 {
					mmas = []mm{{true, true, 1, 3, false}, {true, false, 1, 3, false}, {true, true, 2, 3, false}, {true, false, 2, 3, false},
						{true, true, 2, 2, false}, {true, false, 2, 2, false}, {false, false, 1, 3, false}}
					if g.d.wgmma() {
						mmas = append(mmas, mm{true, true, 2, 2, true}, mm{true, false, 2, 2, true})
					}
				}
				for _, v := range variants {
					for _, gm := range []int{2, 1 << 30} {
						for _, mma := range mmas {
							QMVVariant, GemmMinTokens, QMMA, QMMASplitK, QMMAMT, QMMAParts, QMMAWG = v, gm, mma.on, mma.split, mma.mt, mma.parts, mma.wg
							got := matmulOn(t, g, gw, xv, T, sh.rows, sh.cols)
							for row := 0; row < T; row++ {
								var e, m float64
								for i := 0; i < sh.rows; i++ {
									e = math.Max(e, math.Abs(float64(got[row*sh.rows+i]-want[row*sh.rows+i])))
									m = math.Max(m, math.Abs(float64(want[row*sh.rows+i])))
								}
								if e > 2e-5*m || math.IsNaN(e) {
									t.Fatalf("bits %d %+v T=%d variant %q gemm-from %d qmma %+v: token %d error %g of %g", bits, sh, T, v, gm, mma, row, e, m)
								}
							}
						}
					}
				}
			}
		}
	}
}

// loadOn loads wd on be, failing t on an error.
func loadOn(t *testing.T, be runtime.Backend, wd *runtime.WeightData) runtime.Weight {
	t.Helper()
	w, err := be.LoadWeight(wd)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func matmulOn(t *testing.T, be runtime.Backend, w runtime.Weight, xv []float32, T, rows, cols int) []float32 {
	t.Helper()
	x, err := be.NewTensor(T, cols)
	if err != nil {
		t.Fatal(err)
	}
	y, err := be.NewTensor(T, rows)
	if err != nil {
		t.Fatal(err)
	}
	poison := make([]float32, T*rows)
	for i := range poison {
		poison[i] = float32(math.NaN())
	}
	if err := be.Upload(y, poison); err != nil {
		t.Fatal(err)
	}
	if err := be.Upload(x, xv); err != nil {
		t.Fatal(err)
	}
	if err := be.MatMul(y, w, x); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, T*rows)
	if err := be.Download(y, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMoELarge: experts of hidden size 4096 (the gate/up kernel whose warps
// split the columns, and the one warp per rows kernel) against the CPU
// backend, one and several tokens.
func TestMoELarge(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	r := rand.New(rand.NewPCG(21, 22))
	const E, K, H, I = 8, 4, 4096, 256
	src := newMemSourceDims(t, r, E, H, I, 4, 64)
	rv := make([]float32, E*H)
	for i := range rv {
		rv[i] = r.Float32() - 0.5
	}
	defer func(m bool, mt, p int, wg bool) { MoEGateSplit, QMMA, QMMAEMT, QMMAParts, QMMAWG = true, m, mt, p, wg }(QMMA, QMMAEMT, QMMAParts, QMMAWG)
	for _, e := range []string{"FMOE_CUDA_QMMA", "FMOE_CUDA_QMMAE_MT", "FMOE_CUDA_QMMA_PARTS", "FMOE_CUDA_QMMA_WG"} {
		t.Setenv(e, "")
		os.Unsetenv(e)
	}
	// T=3, 20 and 40 (slots of 8, 16 and 32 pairs; at 40, experts with
	// more than 32 take several), 128 (the prefill step, PrefillBatch)
	// run grouped on the tensor cores (qmmaExperts) unless QMMA is off
	for _, T := range []int{1, 3, 20, 40, 128} {
		xv := make([]float32, T*H)
		for i := range xv {
			xv[i] = 2*r.Float32() - 1
		}
		run := func(be runtime.Backend) []float32 {
			router, err := be.LoadWeight(&runtime.WeightData{Name: "router", Out: E, In: H, F: rv})
			if err != nil {
				t.Fatal(err)
			}
			x, _ := be.NewTensor(T, H)
			y, _ := be.NewTensor(T, H)
			if err := be.Upload(x, xv); err != nil {
				t.Fatal(err)
			}
			if err := be.MoE(context.Background(), y, x, router, src, runtime.MoEParams{Layer: 0, NumExperts: E, TopK: K}, nil); err != nil {
				t.Fatalf("%s: MoE: %v", be.Name(), err)
			}
			out := make([]float32, T*H)
			if err := be.Download(y, out); err != nil {
				t.Fatal(err)
			}
			return out
		}
		c := cpu.New()
		want := run(c)
		c.Close()
		for _, v := range []struct {
			split, mma bool
			mt         int  // the grouped experts' 16-row tiles per warp
			parts      int  // bf16 parts of x (mt 2)
			wg         bool // the warpgroup MMA (qmmwe4 / qmmwd4 for slots of 32 pairs, sm_90a)
		}{{true, true, 1, 3, false}, {true, true, 2, 3, false}, {true, true, 2, 2, false}, {true, true, 2, 2, true}, {true, false, 1, 3, false}, {false, false, 1, 3, false}} {
			MoEGateSplit, QMMA, QMMAEMT, QMMAParts, QMMAWG = v.split, v.mma, v.mt, v.parts, v.wg
			g := openOrSkip(t, Options{})
			if v.wg && !g.d.wgmma() {
				g.Close()
				continue
			}
			got := run(g)
			g.Close()
			if ok, maxErr, maxRef := closeTo(got, want, 1e-4); !ok {
				t.Fatalf("T=%d %+v: cuda vs cpu max error %g (max |ref| %g)", T, v, maxErr, maxRef)
			}
		}
	}
}

// closeTo compares got with want: e = max |got−want|, ref = max |want|; ok
// when e ≤ tol·ref (false on NaN and on an all-zero reference).
func closeTo(got, want []float32, tol float64) (ok bool, e, ref float64) {
	for i := range want {
		e = math.Max(e, math.Abs(float64(got[i]-want[i])))
		ref = math.Max(ref, math.Abs(float64(want[i])))
	}
	return e <= tol*ref && ref != 0, e, ref
}

// TestLaunchStructs pins the Go mirrors of cuda.h's CUlaunchConfig and
// CUlaunchAttribute to the C layout (64-bit): sizes and field offsets.
func TestLaunchStructs(t *testing.T) {
	var c launchConfig
	if s, st, at, n := unsafe.Sizeof(c), unsafe.Offsetof(c.stream), unsafe.Offsetof(c.attrs), unsafe.Offsetof(c.nattrs); s != 56 || st != 32 || at != 40 || n != 48 {
		t.Fatalf("launchConfig: size %d, stream at %d, attrs at %d, nattrs at %d; want 56, 32, 40, 48", s, st, at, n)
	}
	var a launchAttr
	if s, v := unsafe.Sizeof(a), unsafe.Offsetof(a.val); s != 72 || v != 8 {
		t.Fatalf("launchAttr: size %d, value at %d; want 72, 8", s, v)
	}
}

// TestQMXExperts checks the one-token expert kernels (qmxe gate/up, qmxd or
// qmxs down with the routing weights) against the CPU backend on the shapes
// they take (4-, 8- and 2-bit; 32, 64 and 128 threads per row; K up to 32;
// every down-projection tile), and the fallback path with them off.
func TestQMXExperts(t *testing.T) {
	// wider rows are not built: they keep the older expert kernels
	if g, _, _ := qmxMoEKernel("qmxe", 4, 64, 8192, 8); g != "" {
		t.Fatalf("qmxe for 8192 4-bit columns: %s, want none", g)
	}
	openOrSkip(t, Options{}).Close()
	defer func(x string) { QMX = x }(QMX)
	QMX = "8p"
	r := rand.New(rand.NewPCG(51, 52))
	for _, c := range []struct{ E, K, H, I, bits int }{
		{8, 4, 4096, 1024, 4}, {12, 10, 1024, 1024, 4}, {6, 4, 2048, 2048, 8}, {6, 3, 2048, 2048, 2}, {8, 2, 4096, 2048, 4},
		{40, 32, 1024, 1024, 4},
	} {
		if g, _, _ := qmxMoEKernel("qmxe", c.bits, 64, c.H, 8); g == "" {
			t.Fatalf("%+v: no qmxe kernel", c)
		}
		if d, _, _ := qmxMoEKernel("qmxd", c.bits, 64, c.I, 4); d == "" {
			t.Fatalf("%+v: no qmxd kernel", c)
		}
		src := newMemSourceDims(t, r, c.E, c.H, c.I, c.bits, 64)
		rv := make([]float32, c.E*c.H)
		for i := range rv {
			rv[i] = r.Float32() - 0.5
		}
		xv := make([]float32, c.H)
		for i := range xv {
			xv[i] = 2*r.Float32() - 1
		}
		run := func(be runtime.Backend) []float32 {
			router, err := be.LoadWeight(&runtime.WeightData{Name: "router", Out: c.E, In: c.H, F: rv})
			if err != nil {
				t.Fatal(err)
			}
			x, _ := be.NewTensor(1, c.H)
			y, _ := be.NewTensor(1, c.H)
			if err := be.Upload(x, xv); err != nil {
				t.Fatal(err)
			}
			for step := 0; step < 2; step++ { // the second step runs from the GPU cache
				if err := be.MoE(context.Background(), y, x, router, src, runtime.MoEParams{Layer: 0, NumExperts: c.E, TopK: c.K}, nil); err != nil {
					t.Fatalf("%s: MoE: %v", be.Name(), err)
				}
			}
			out := make([]float32, c.H)
			if err := be.Download(y, out); err != nil {
				t.Fatal(err)
			}
			return out
		}
		cb := cpu.New()
		want := run(cb)
		cb.Close()
		for _, v := range []struct{ qmxe, du, dn string }{
			{"1", "4", "walk"}, {"1", "2", "walk"}, {"1", "8", "walk"},
			{"1", "4", "split"}, {"1", "2", "split"}, {"1", "8", "split"}, {"0", "4", ""},
		} {
			t.Setenv("FMOE_CUDA_QMXE", v.qmxe)
			t.Setenv("FMOE_CUDA_QMXD_U", v.du)
			t.Setenv("FMOE_CUDA_QMXD", v.dn)
			g := openOrSkip(t, Options{})
			got := run(g)
			g.Close()
			if ok, maxErr, maxRef := closeTo(got, want, 2e-5); !ok {
				t.Fatalf("%+v qmxe %s down %s tile %s: cuda vs cpu max error %g (max |ref| %g)", c, v.qmxe, v.dn, v.du, maxErr, maxRef)
			}
		}
	}
}

// TestGraphChunks: a segment's graphs tile its launches without gaps, the
// first ones ramp up (graphRamp) and later ones take graphChunk each.
func TestGraphChunks(t *testing.T) {
	prev := 0
	for k := 0; k < 12; k++ {
		lo, hi := chunk(k)
		want := graphChunk
		if os.Getenv("FMOE_CUDA_GRAPH_RAMP") != "0" && k < len(graphRamp) {
			want = graphRamp[k]
		}
		if lo != prev || hi-lo != want {
			t.Fatalf("chunk %d = [%d, %d), want [%d, %d)", k, lo, hi, prev, prev+want)
		}
		for _, i := range []int{lo, hi - 1} {
			if chunkAt(i) != k {
				t.Fatalf("launch %d in chunk %d, want %d", i, chunkAt(i), k)
			}
		}
		prev = hi
	}
}

// TestTraceStats: a kernel's time runs to the next kernel's start, the last
// one before a barrier counts apart ("|" + name), the very last one has no
// end, and a trace whose timestamps do not match its kernels is an error.
func TestTraceStats(t *testing.T) {
	names := []string{"a/g1", "b/g2", "", "a/g1", "b/g2", "c/g3"}
	got, err := traceStats(names, []int64{0, 10, 30, 34, 40})
	if err != nil {
		t.Fatal(err)
	}
	want := []TraceStat{{"|b/g2", 1, 20}, {"a/g1", 2, 14}, {"b/g2", 1, 6}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := traceStats(names, []int64{0, 10}); err == nil {
		t.Fatal("5 kernels with 2 timestamps: no error")
	}
	if cut := firstKernels(names, 3); !slices.Equal(cut, names[:4]) {
		t.Fatalf("first 3 kernels: %q", cut)
	}
}

// TestQMMWLayout: qmmw4 (the warpgroup MMA GEMM) on one 128-row, 64-token
// tile of 128 columns against the CPU backend; on a mismatch it says, for
// the first wrong outputs, which (token, row) of the reference each one
// equals, so that a fragment or descriptor layout error shows as a
// permutation rather than only as an error size. Skips unless the kernels
// are built for sm_90a.
func TestQMMWLayout(t *testing.T) {
	g := openOrSkip(t, Options{})
	defer g.Close()
	if !g.d.wgmma() {
		t.Skip("kernels not built for sm_90a")
	}
	c := cpu.New()
	defer c.Close()
	defer func(w, s bool) { QMMAWG, QMMASplitK = w, s }(QMMAWG, QMMASplitK)
	t.Setenv("FMOE_CUDA_QMMA_WG", "")
	os.Unsetenv("FMOE_CUDA_QMMA_WG")
	QMMAWG, QMMASplitK = true, false
	r := rand.New(rand.NewPCG(31, 32))
	const rows, cols, T = 128, 128, 64
	wd := &runtime.WeightData{Name: "w", Out: rows, In: cols, Q: randQuant(r, 4, 64, rows, cols)}
	gw, cw := loadOn(t, g, wd), loadOn(t, c, wd)
	xv := make([]float32, T*cols)
	for i := range xv {
		xv[i] = 2*r.Float32() - 1
	}
	want := matmulOn(t, c, cw, xv, T, rows, cols)
	got := matmulOn(t, g, gw, xv, T, rows, cols)
	var maxRef float64
	for _, v := range want {
		maxRef = math.Max(maxRef, math.Abs(float64(v)))
	}
	bad := 0
	for n := 0; n < T; n++ {
		for row := 0; row < rows; row++ {
			v := got[n*rows+row]
			if math.Abs(float64(v-want[n*rows+row])) <= 2e-5*maxRef {
				continue
			}
			if bad++; bad <= 12 {
				at := "none"
				for i, wv := range want {
					if math.Abs(float64(v-wv)) <= 2e-5*maxRef {
						at = fmt.Sprintf("token %d row %d", i/rows, i%rows)
						break
					}
				}
				t.Errorf("token %d row %d: got %g, want %g; got equals the reference at %s", n, row, v, want[n*rows+row], at)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d outputs wrong", bad, T*rows)
	}
}
