package requant

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fmoe/fmoe/quant"
)

// naiveMinMax transcribes repack_experts_2bit.py's requantize_projection
// element by element (no level tables), as the independent reference.
func naiveMinMax(src *quant.Matrix) (w []uint32, s, b []uint16) {
	gs := src.GroupSize
	w = make([]uint32, src.Rows*src.Cols/16)
	s = make([]uint16, len(src.Scales))
	b = make([]uint16, len(src.Scales))
	f := make([]float32, gs)
	for r := 0; r < src.Rows; r++ {
		for g := 0; g < src.Cols/gs; g++ {
			i := r*src.Cols/gs + g
			sc, bi := quant.BF16ToF32(src.Scales[i]), quant.BF16ToF32(src.Biases[i])
			for c := range f {
				q := float32(src.Code(r, g*gs+c))
				p := q * sc
				f[c] = p + bi
			}
			lo, hi := slices.Min(f), slices.Max(f)
			s2 := (hi - lo) / float32(3.0)
			d := s2
			if s2 == 0 {
				d = 1
			}
			for c, x := range f {
				y := (x - lo) / d
				q2 := uint32(min(max(math.RoundToEven(float64(y)), 0), 3))
				col := g*gs + c
				w[r*src.Cols/16+col/16] |= q2 << (2 * (col % 16))
			}
			s[i] = uint16(math.Float32bits(s2) >> 16)
			b[i] = uint16(math.Float32bits(lo) >> 16)
		}
	}
	return w, s, b
}

// gaussian returns rows×cols N(0, σ) weights with a few large outliers, the
// shape of real MoE expert weights.
func gaussian(r *rand.Rand, rows, cols int, sigma float64) []float32 {
	w := make([]float32, rows*cols)
	for i := range w {
		x := r.NormFloat64() * sigma
		if r.IntN(512) == 0 {
			x *= 6
		}
		w[i] = float32(x)
	}
	return w
}

func quantize4(t testing.TB, w []float32, rows, cols int) *quant.Matrix {
	t.Helper()
	m, err := quant.Quantize(w, rows, cols, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newMatrix2(src *quant.Matrix) *quant.Matrix {
	return &quant.Matrix{Bits: 2, GroupSize: src.GroupSize, Rows: src.Rows, Cols: src.Cols,
		W: make([]uint32, src.Rows*src.Cols/16), Scales: make([]uint16, len(src.Scales)), Biases: make([]uint16, len(src.Biases))}
}

func TestMinMaxMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 20 {
		rows, cols := 1+r.IntN(9), 64*(1+r.IntN(4))
		src := quantize4(t, gaussian(r, rows, cols, 0.02*float64(1+trial)), rows, cols)
		// Random raw bytes too: any scale sign, exponent and code pattern.
		if trial%2 == 1 {
			for i := range src.W {
				src.W[i] = r.Uint32()
			}
			for i := range src.Scales {
				src.Scales[i] = uint16(r.Uint32()) &^ 0x4000 // finite: clear the top exponent bit
				src.Biases[i] = uint16(r.Uint32()) &^ 0x4000
			}
		}
		dst := newMatrix2(src)
		var st Stats
		if err := Matrix(dst, src, MinMax, &st); err != nil {
			t.Fatal(err)
		}
		w, s, b := naiveMinMax(src)
		if !slices.Equal(dst.W, w) || !slices.Equal(dst.Scales, s) || !slices.Equal(dst.Biases, b) {
			t.Fatalf("trial %d: level-table minmax differs from the element-wise reference", trial)
		}
	}
}

func TestMinMaxHandPicked(t *testing.T) {
	// s4 = 0.5, b4 = 0: codes {0,1,3,5,6} give f = {0,.5,1.5,2.5,3}; s2 = 1,
	// so (f-lo)/s2 hits the ties .5, 1.5, 2.5: half-to-even gives 0,2,2
	// (half-away-from-zero would give 1,2,3).
	codes := []uint32{0, 1, 3, 5, 6}
	src := &quant.Matrix{Bits: 4, GroupSize: 64, Rows: 2, Cols: 64,
		W: make([]uint32, 16), Scales: []uint16{0x3f00, 0x3f80}, Biases: []uint16{0, 0x4000}}
	for c := 0; c < 64; c++ {
		src.W[c/8] |= codes[c%len(codes)] << (4 * (c % 8))
	}
	// Row 1 is constant (every code 7): degenerate, s2 stored as 0, bias = 7·1+2.
	for i := 8; i < 16; i++ {
		src.W[i] = 0x77777777
	}
	dst := newMatrix2(src)
	var st Stats
	if err := Matrix(dst, src, MinMax, &st); err != nil {
		t.Fatal(err)
	}
	want2 := []uint32{0, 0, 2, 2, 3}
	for c := 0; c < 64; c++ {
		if got := dst.Code(0, c); got != want2[c%5] {
			t.Fatalf("col %d: code %d, want %d", c, got, want2[c%5])
		}
		if got := dst.Code(1, c); got != 0 {
			t.Fatalf("degenerate row col %d: code %d", c, got)
		}
	}
	if dst.Scales[0] != 0x3f80 || dst.Biases[0] != 0 || dst.Scales[1] != 0 || dst.Biases[1] != quant.F32ToBF16Trunc(9) {
		t.Fatalf("params %#x %#x %#x %#x", dst.Scales[0], dst.Biases[0], dst.Scales[1], dst.Biases[1])
	}
	// Truncation, not rounding: s2 = (hi-lo)/3 with hi-lo = 1 gives
	// 0.33333334 = 0x3eaaaaab, stored as 0x3eaa (rounding would give 0x3eab).
	src.Scales[0], src.Biases[0] = 0x3f80, 0
	for i := range 8 {
		src.W[i] = 0x10101010 // codes 0 and 1 only
	}
	if err := Matrix(dst, src, MinMax, &st); err != nil {
		t.Fatal(err)
	}
	if dst.Scales[0] != 0x3eaa {
		t.Fatalf("scale %#x, want 0x3eaa (truncated)", dst.Scales[0])
	}
}

// dequantError is an independent error measurement: both matrices
// dequantized row by row.
func dequantError(a, b *quant.Matrix) Stats {
	ra, rb := make([]float32, a.Cols), make([]float32, a.Cols)
	var st Stats
	for r := 0; r < a.Rows; r++ {
		a.DequantizeRow(ra, r)
		b.DequantizeRow(rb, r)
		for c := range ra {
			e := math.Abs(float64(ra[c]) - float64(rb[c]))
			st.SumSq += e * e
			st.N++
			st.MaxAbs = max(st.MaxAbs, e)
		}
	}
	return st
}

func TestStatsAndMSEGain(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	rows, cols := 256, 512
	src := quantize4(t, gaussian(r, rows, cols, 0.02), rows, cols)
	var stats [2]Stats
	for i, m := range []Method{MinMax, MSE} {
		dst := newMatrix2(src)
		if err := Matrix(dst, src, m, &stats[i]); err != nil {
			t.Fatal(err)
		}
		ref := dequantError(src, dst)
		if ref.N != stats[i].N || math.Abs(ref.SumSq-stats[i].SumSq) > 1e-9*ref.SumSq || ref.MaxAbs != stats[i].MaxAbs {
			t.Fatalf("%s: stats %+v, dequantized comparison %+v", m, stats[i], ref)
		}
	}
	gain := 1 - stats[1].RMSE()/stats[0].RMSE()
	t.Logf("RMSE minmax %.6g, mse %.6g (%.1f%% lower)", stats[0].RMSE(), stats[1].RMSE(), 100*gain)
	if gain < 0.15 {
		t.Fatalf("mse RMSE only %.1f%% below minmax, want >= 15%%", 100*gain)
	}
}

func TestMSENeverWorse(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var g groupIn
	var a, b groupOut
	for range 20000 {
		words := make([]uint32, 8)
		for i := range words {
			words[i] = r.Uint32()
			if r.IntN(3) == 0 { // few distinct levels
				words[i] &= 0x33333333
			}
		}
		s4 := quant.F32ToBF16(float32(r.NormFloat64() * 0.01))
		b4 := quant.F32ToBF16(float32(r.NormFloat64() * 0.1))
		g.levels(s4, b4, words)
		minMax(&g, &a)
		mse(&g, &b)
		var sa, sb Stats
		measure(&g, &a, &sa)
		measure(&g, &b, &sb)
		if sb.SumSq > sa.SumSq {
			t.Fatalf("group s4=%#x b4=%#x: mse error %g > minmax %g", s4, b4, sb.SumSq, sa.SumSq)
		}
	}
}

func TestMatrixRejectsShapes(t *testing.T) {
	src := quantize4(t, make([]float32, 64*2), 2, 64)
	bad := []*quant.Matrix{
		{Bits: 2, GroupSize: 64, Rows: 1, Cols: 64, W: make([]uint32, 4), Scales: make([]uint16, 1), Biases: make([]uint16, 1)},
		{Bits: 4, GroupSize: 64, Rows: 2, Cols: 64, W: make([]uint32, 16), Scales: make([]uint16, 2), Biases: make([]uint16, 2)},
	}
	for i, d := range bad {
		var st Stats
		if err := Matrix(d, src, MinMax, &st); err == nil {
			t.Fatalf("case %d: no error", i)
		} else if !errors.Is(err, ErrShape) {
			t.Fatalf("case %d: %v does not wrap ErrShape", i, err)
		}
	}
}
