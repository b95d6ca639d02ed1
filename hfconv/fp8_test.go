package hfconv

import (
	"math"
	"testing"
)

func TestFP8Tables(t *testing.T) {
	cases := []struct {
		table *[256]float32
		b     byte
		want  float64
	}{
		{&fp8E4M3, 0x00, 0}, {&fp8E4M3, 0x38, 1}, {&fp8E4M3, 0xb8, -1},
		{&fp8E4M3, 0x7e, 448},               // largest finite E4M3FN
		{&fp8E4M3, 0x01, math.Ldexp(1, -9)}, // smallest subnormal
		{&fp8E4M3, 0x08, math.Ldexp(1, -6)}, // smallest normal
		{&fp8E4M3, 0x40, 2}, {&fp8E4M3, 0x3c, 1.5},
		{&fp8E5M2, 0x3c, 1}, {&fp8E5M2, 0x7b, 57344}, {&fp8E5M2, 0x01, math.Ldexp(1, -16)},
	}
	for _, c := range cases {
		if got := c.table[c.b]; float64(got) != c.want {
			t.Errorf("%#02x: got %v want %v", c.b, got, c.want)
		}
	}
	if !math.IsNaN(float64(fp8E4M3[0x7f])) || !math.IsNaN(float64(fp8E4M3[0xff])) {
		t.Error("E4M3FN NaN")
	}
	if !math.IsInf(float64(fp8E5M2[0x7c]), 1) || !math.IsNaN(float64(fp8E5M2[0x7d])) {
		t.Error("E5M2 inf/NaN")
	}
}
