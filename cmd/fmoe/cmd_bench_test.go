package main

import (
	"math"
	"testing"
)

// TestPrefillFloor: the HBM time sums per-batch bytes (a short last batch
// touches fewer experts), and measured host or disk loads bound the floor
// when their copy time is larger.
func TestPrefillFloor(t *testing.T) {
	const dense, size = int64(6e9), int64(7e6)
	const L, K, E = 60, 4, 32
	const hbm, h2d, disk = 4e12, 50e9, 1e9
	batch := func(b int) float64 {
		touched := E * (1 - math.Pow(1-float64(K)/E, float64(b)))
		return (float64(dense) + L*touched*float64(size)) / hbm
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Abs(b) }
	cases := []struct {
		P, host, disk int64
		want          float64
		bound         string
	}{
		{128, 0, 0, 4 * batch(32), "hbm"},
		{40, 0, 0, batch(32) + batch(8), "hbm"},
		{1, 0, 0, batch(1), "hbm"},
		{128, 1, 0, 4 * batch(32), "hbm"},                               // one copy hides under the HBM time
		{128, 60 * 24 * 4, 0, 60 * 24 * 4 * float64(size) / h2d, "h2d"}, // (b): misses of every batch from host memory
		{128, 60 * 24 * 4, 2000, 2000 * float64(size) / disk, "disk"},
	}
	for _, c := range cases {
		got, bound := prefillFloor(int(c.P), 32, dense, size, L, K, E, c.host, c.disk, hbm, h2d, disk)
		if !near(got, c.want) || bound != c.bound {
			t.Errorf("P=%d host=%d disk=%d: floor %g s (%s), want %g s (%s)", c.P, c.host, c.disk, got, bound, c.want, c.bound)
		}
	}
	// no h2d or disk bandwidth given: loads cannot bound it
	if _, bound := prefillFloor(128, 32, dense, size, L, K, E, 1e6, 1e6, hbm, 0, 0); bound != "hbm" {
		t.Errorf("bound %s without h2d and disk bandwidths", bound)
	}
}
