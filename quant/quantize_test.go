package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestQuantizeRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, bits := range []int{2, 4, 8} {
		rows, cols, group := 3, 128, 64
		w := make([]float32, rows*cols)
		for i := range w {
			w[i] = float32(r.NormFloat64())
		}
		m, err := Quantize(w, rows, cols, bits, group)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
		row := make([]float32, cols)
		for i := 0; i < rows; i++ {
			m.DequantizeRow(row, i)
			for c := range row {
				g := i*m.GroupsPerRow() + c/group
				step := math.Abs(float64(BF16ToF32(m.Scales[g])))
				// Moving the grid so that 0 is exact can clip the far edge by up
				// to a step; plus bf16 rounding of scale and bias.
				tol := step*1.0 + step*float64(int(1)<<bits)*1e-2 + 1e-2
				if d := math.Abs(float64(row[c] - w[i*cols+c])); d > tol {
					t.Fatalf("bits %d: (%d,%d) got %v want %v (|d|=%g > %g)", bits, i, c, row[c], w[i*cols+c], d, tol)
				}
			}
		}
	}
}

func TestQuantizeZeroExact(t *testing.T) {
	// 0.0 must be exactly representable: the MLX quantizer moves the grid so.
	w := make([]float32, 64)
	for i := range w {
		w[i] = float32(i) - 20.3
	}
	w[7] = 0
	m, err := Quantize(w, 1, 64, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	row := make([]float32, 64)
	m.DequantizeRow(row, 0)
	// bf16 rounding of scale/bias can move zero by at most a few ulps of bias.
	if math.Abs(float64(row[7])) > math.Abs(float64(BF16ToF32(m.Biases[0])))*1e-2 {
		t.Fatalf("zero dequantized to %v", row[7])
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{{1, 0x3f80}, {-2, 0xc000}, {0, 0}, {1.00390625, 0x3f80}, {1.01171875, 0x3f82}}
	for _, c := range cases {
		if got := F32ToBF16(c.in); got != c.want {
			t.Errorf("F32ToBF16(%v) = %#x, want %#x", c.in, got, c.want)
		}
		if back := BF16ToF32(c.want); F32ToBF16(back) != c.want {
			t.Errorf("round trip of %#x", c.want)
		}
	}
	if F32ToBF16Trunc(1.01171875) != 0x3f81 {
		t.Errorf("trunc")
	}
}

// TestRoundCode checks the fast code rounding against C roundf semantics
// (math.Round: half away from zero) clamped to [0, 15], on halfway cases,
// neighbours of halfway cases and random values.
func TestRoundCode(t *testing.T) {
	ref := func(x float32) uint32 {
		r := math.Round(float64(min(x, 15)))
		return uint32(max(r, 0))
	}
	vals := []float32{0, 0.5, 1.5, 2.5, 14.5, 15, 15.4, 16, 1e9, -0.4, -0.5, -3}
	for i := 0; i <= 16; i++ {
		h := float32(i) + 0.5
		vals = append(vals, h, math.Nextafter32(h, 0), math.Nextafter32(h, 100))
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		vals = append(vals, float32(r.Float64()*17-1))
	}
	for _, v := range vals {
		if got, want := roundCode(min(v, 15)), ref(v); got != want {
			t.Fatalf("roundCode(%v) = %d, want %d", v, got, want)
		}
	}
}
