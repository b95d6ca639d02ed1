package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// quantizeRef is Quantize through the pure-Go loop alone.
func quantizeRef(w []float32, rows, cols, bits, group int) *Matrix {
	m := &Matrix{Bits: bits, GroupSize: group, Rows: rows, Cols: cols}
	m.W = make([]uint32, rows*m.WordsPerRow())
	m.Scales = make([]uint16, rows*m.GroupsPerRow())
	m.Biases = make([]uint16, len(m.Scales))
	quantizeGo(m, w, 0, len(m.Scales))
	return m
}

// checkSame fails unless Quantize (SIMD where available) and the Go loop
// give the same words, scales and biases; likewise QuantizeBF16 of the
// values' high halves against the Go loop on their widened values.
func checkSame(t *testing.T, name string, w []float32, rows, cols, bits, group int) {
	t.Helper()
	got, err := Quantize(w, rows, cols, bits, group)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	compareQuant(t, name, w, got, quantizeRef(w, rows, cols, bits, group))
	src, wb := make([]uint16, len(w)), make([]float32, len(w))
	for i, v := range w {
		src[i] = uint16(math.Float32bits(v) >> 16)
		wb[i] = BF16ToF32(src[i])
	}
	got, err = QuantizeBF16(src, rows, cols, bits, group)
	if err != nil {
		t.Fatalf("%s: bf16: %v", name, err)
	}
	compareQuant(t, name+" bf16", wb, got, quantizeRef(wb, rows, cols, bits, group))
}

func compareQuant(t *testing.T, name string, w []float32, got, want *Matrix) {
	t.Helper()
	bits, group := want.Bits, want.GroupSize
	for g := range want.Scales {
		if got.Scales[g] != want.Scales[g] || got.Biases[g] != want.Biases[g] {
			t.Fatalf("%s (%d-bit g%d): group %d scale/bias %#x/%#x, want %#x/%#x",
				name, bits, group, g, got.Scales[g], got.Biases[g], want.Scales[g], want.Biases[g])
		}
	}
	per := 32 / bits
	for i := range want.W {
		if got.W[i] != want.W[i] {
			g := i * per / group
			t.Fatalf("%s (%d-bit g%d): word %d (group %d, values %v) = %#08x, want %#08x",
				name, bits, group, i, g, w[i*per:(i+1)*per], got.W[i], want.W[i])
		}
	}
}

// quantCases are named inputs of n values: every pattern the kernels could
// treat differently from the Go loop.
func quantCases(n, group int, r *rand.Rand) map[string][]float32 {
	gauss := func(s float64) []float32 {
		w := make([]float32, n)
		for i := range w {
			w[i] = float32(r.NormFloat64() * s)
		}
		return w
	}
	c := map[string][]float32{"gauss": gauss(1), "gauss-bf16": gauss(0.02)}
	for i, v := range c["gauss-bf16"] {
		c["gauss-bf16"][i] = BF16ToF32(F32ToBF16(v))
	}
	out := gauss(0.02)
	for i := 0; i < n/50; i++ {
		out[r.IntN(n)] = float32(r.NormFloat64() * 3)
	}
	c["outliers"] = out
	cst, neg, zeros, big, tiny, special := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n), gauss(1)
	consts := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 0.37, -5.5, 1e-9, -1e-9, 3e38, -3e38}
	for i := range cst {
		g := i / group
		cst[i] = consts[g%len(consts)]
		neg[i] = -float32(math.Abs(r.NormFloat64())) - float32(g%3)
		if i%3 == 0 {
			zeros[i] = float32(math.Copysign(0, -1))
		} else if i%7 == 0 {
			zeros[i] = float32(r.NormFloat64())
		}
		big[i] = float32(r.NormFloat64() * 1e37)
		tiny[i] = float32(r.NormFloat64() * 1e-40) // subnormal
	}
	c["constant"], c["all-negative"], c["zeros"], c["large"], c["subnormal"] = cst, neg, zeros, big, tiny
	// NaN and infinities, a few per group in some groups.
	for g := 0; g < n/group; g++ {
		switch g % 8 {
		case 1:
			special[g*group+r.IntN(group)] = float32(math.NaN())
		case 2:
			special[g*group+r.IntN(group)] = float32(math.Inf(1))
		case 3:
			special[g*group+r.IntN(group)] = float32(math.Inf(-1))
		case 4, 5, 6, 7: // all NaN, all +Inf, all -Inf, +Inf and NaN
			for i := 0; i < group; i++ {
				special[g*group+i] = []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}[min(g%8-4, 2)]
				if g%8 == 7 && i%2 == 0 {
					special[g*group+i] = float32(math.Inf(1))
				}
			}
		}
	}
	c["special"] = special
	return c
}

// boundaryCase builds groups whose values sit exactly on, and one or two
// ulps around, the rounding points k+0.5 of the code grid (and the clamp
// point), with the group's range fixed by its first two values.
func boundaryCase(n, group, bits int, r *rand.Rand) []float32 {
	nBins := float32(int(1)<<bits - 1)
	w := make([]float32, n)
	for g := 0; g < n/group; g++ {
		vals := w[g*group : (g+1)*group]
		lo := -float32(r.Float64()*2 + 0.01)
		hi := float32(r.Float64()*2 + 0.01)
		if g%4 == 1 {
			hi = 0 // all ≤ 0
		} else if g%4 == 2 {
			lo = hi / 3 // all > 0: the max still starts at 0
		}
		vals[0], vals[1] = lo, hi
		scale, bias := groupParams(min(lo, 0), max(hi, 0), nBins)
		for i := 2; i < group; i++ {
			k := float32(r.IntN(int(nBins)+2)) - 0.5 // -0.5 .. nBins+0.5
			v := bias + k*scale
			for s := r.IntN(5) - 2; s != 0; {
				if s > 0 {
					v, s = math.Nextafter32(v, float32(math.Inf(1))), s-1
				} else {
					v, s = math.Nextafter32(v, float32(math.Inf(-1))), s+1
				}
			}
			vals[i] = min(max(v, lo), hi)
		}
	}
	return w
}

func TestQuantizeSIMDExact(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	shapes := []struct{ rows, cols, group int }{
		{8, 128, 32}, {5, 256, 64}, {3, 384, 128}, {4, 1024, 256}, {7, 192, 96}, {4, 128, 16}, {1, 64, 64}, {130, 4096, 64}, {9, 1088, 32},
	}
	for _, bits := range []int{2, 4, 8} {
		for _, sh := range shapes {
			if sh.group%(32/bits) != 0 {
				continue
			}
			n := sh.rows * sh.cols
			cases := quantCases(n, sh.group, r)
			cases["boundary"] = boundaryCase(n, sh.group, bits, r)
			names := make([]string, 0, len(cases))
			for k := range cases {
				names = append(names, k)
			}
			slices.Sort(names)
			for _, name := range names {
				checkSame(t, fmt.Sprintf("%s %dx%d", name, sh.rows, sh.cols), cases[name], sh.rows, sh.cols, bits, sh.group)
			}
		}
	}
}

// TestQuantizeBoundaryHits makes sure boundaryCase really produces x that
// are exactly halfway between codes (else the test above proves less).
func TestQuantizeBoundaryHits(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const group, bits = 64, 4
	w := boundaryCase(64*group, group, bits, r)
	halves := 0
	for g := 0; g < 64; g++ {
		vals := w[g*group : (g+1)*group]
		lo, hi := groupRange(vals)
		scale, bias := groupParams(lo, hi, 15)
		for _, v := range vals {
			x := (v - bias) / scale
			if x-float32(math.Floor(float64(x))) == 0.5 {
				halves++
			}
		}
	}
	if halves < 100 {
		t.Fatalf("only %d exact halfway codes", halves)
	}
}

// TestQuantizeSIMDCoverage checks which groups the SIMD kernels take: all
// but the last rows·groups mod 8 when the group is 32·2^k columns.
func TestQuantizeSIMDCoverage(t *testing.T) {
	if !simdAvailable() {
		t.Skip("no SIMD kernels on this build/CPU")
	}
	for _, c := range []struct{ rows, cols, group, want int }{
		{3, 128, 32, 8}, {9, 64, 64, 8}, {5, 128, 128, 0}, {8, 128, 16, 0}, {8, 192, 96, 0}, {1000, 4096, 64, 64000}, {3, 4096, 256, 48},
	} {
		m := &Matrix{Bits: 4, GroupSize: c.group, Rows: c.rows, Cols: c.cols}
		m.W = make([]uint32, c.rows*m.WordsPerRow())
		m.Scales = make([]uint16, c.rows*m.GroupsPerRow())
		m.Biases = make([]uint16, len(m.Scales))
		if got := quantizeSIMD(m, make([]float32, c.rows*c.cols)); got != c.want {
			t.Errorf("%dx%d g%d: SIMD took %d groups, want %d", c.rows, c.cols, c.group, got, c.want)
		}
		if got := quantizeSIMDBF16(m, make([]uint16, c.rows*c.cols)); got != c.want {
			t.Errorf("%dx%d g%d: bf16 SIMD took %d groups, want %d", c.rows, c.cols, c.group, got, c.want)
		}
	}
}

// FuzzQuantizeSIMD compares the SIMD and Go quantizers on arbitrary float32
// bit patterns (8 groups of 32).
func FuzzQuantizeSIMD(f *testing.F) {
	f.Add(make([]byte, 1024), uint8(4))
	seed := make([]byte, 1024)
	for i := range seed {
		seed[i] = byte(i * 37)
	}
	f.Add(seed, uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, bits uint8) {
		const group, n = 32, 256
		if len(b) < 4*n {
			return
		}
		w := make([]float32, n)
		for i := range w {
			w[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		bb := []int{2, 4, 8}[int(bits)%3]
		checkSame(t, "fuzz", w, 2, n/2, bb, group)
	})
}

func TestWidenBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{0, 1, 31, 32, 33, 100, 1000} {
		src := make([]uint16, n+3) // longer than dst: only len(dst) are read
		for i := range src {
			src[i] = uint16(r.Uint32())
		}
		dst := make([]float32, n+1)
		dst[n] = 42
		WidenBF16(dst[:n], src)
		for i := 0; i < n; i++ {
			if math.Float32bits(dst[i]) != uint32(src[i])<<16 {
				t.Fatalf("n=%d: dst[%d] = %#x, want %#x", n, i, math.Float32bits(dst[i]), uint32(src[i])<<16)
			}
		}
		if dst[n] != 42 {
			t.Fatalf("n=%d: wrote past len(dst)", n)
		}
	}
}

func TestQuantizeErrors(t *testing.T) {
	for _, c := range []struct{ n, rows, cols, bits, group int }{
		{10, 2, 4, 4, 4}, {8, 2, 4, 3, 4}, {8, 2, 4, 4, 3}, {8, 2, 4, 4, 0}, {64, 1, 64, 4, 4}, {-4, -2, 2, 4, 8},
	} {
		if _, err := Quantize(make([]float32, max(c.n, 0)), c.rows, c.cols, c.bits, c.group); !errors.Is(err, ErrLayout) {
			t.Errorf("Quantize %+v: err %v, want ErrLayout", c, err)
		}
		if _, err := QuantizeBF16(make([]uint16, max(c.n, 0)), c.rows, c.cols, c.bits, c.group); !errors.Is(err, ErrLayout) {
			t.Errorf("QuantizeBF16 %+v: err %v, want ErrLayout", c, err)
		}
	}
}
