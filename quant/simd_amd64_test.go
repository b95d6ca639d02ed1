//go:build amd64 && !noasm && gc

package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func simdAvailable() bool { return useAVX2 }

// testKernels returns the call set-up of every kernel this CPU can run for
// m (the dispatched one first), so both SIMD generations get tested on a
// machine that has AVX-512.
func testKernels(m *Matrix, x []float32) []*mvArgs {
	all := []*mvArgs{newMVArgs(m, x)}
	k := all[0].kern
	if k == kernAVX512 && useAVX2 && m.Bits != 8 {
		all = append(all, newMVArgsKern(m, x, kernAVX2))
	}
	return all
}

// TestDequantAVX512 compares the prefill product's row dequantizers with
// DequantizeRow: equal up to the rounding of code·scale + bias (one FMA
// there, a product and a sum here).
func TestDequantAVX512(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512")
	}
	rng := rand.New(rand.NewPCG(41, 42))
	dq := map[int]func(w *uint32, sc, bi *uint16, dst *float32, ngroups, bpg int){
		2: dequant2AVX512, 4: dequant4AVX512, 8: dequant8AVX512}
	for _, bits := range []int{2, 4, 8} {
		for _, group := range []int{64, 128} {
			m := randMatrix(rng, bits, group, 3, 4*group)
			got, want := make([]float32, m.Cols), make([]float32, m.Cols)
			for r := 0; r < m.Rows; r++ {
				gpr := m.GroupsPerRow()
				dq[bits](&m.W[r*m.WordsPerRow()], &m.Scales[r*gpr], &m.Biases[r*gpr], &got[0], gpr, group/64)
				m.DequantizeRow(want, r)
				for c := range got {
					if d := math.Abs(float64(got[c] - want[c])); d > 1e-6*(1+math.Abs(float64(want[c]))) {
						t.Fatalf("%d-bit g%d row %d col %d: %v, DequantizeRow %v", bits, group, r, c, got[c], want[c])
					}
				}
			}
		}
	}
}

// TestPrepXAVX512 compares the AVX-512 x preparation with permuteX (exact)
// and groupSums (up to the order of the additions).
func TestPrepXAVX512(t *testing.T) {
	if !useAVX512 {
		t.Skip("no AVX-512")
	}
	rng := rand.New(rand.NewPCG(43, 44))
	for _, bits := range []int{4, 2} {
		for _, group := range []int{64, 128} {
			x := randVec(rng, 8*group)
			xp, want := make([]float32, len(x)), make([]float32, len(x))
			sums, wantSums := make([]float32, 8), make([]float32, 8)
			prep := prepX4AVX512
			if bits == 2 {
				prep = prepX2AVX512
			}
			prep(&x[0], &xp[0], &sums[0], len(sums), group/64)
			permuteX(want, x, bits)
			groupSums(wantSums, x, group)
			for i := range xp {
				if xp[i] != want[i] {
					t.Fatalf("%d-bit g%d: xp[%d] = %v, permuteX %v", bits, group, i, xp[i], want[i])
				}
			}
			for g := range sums {
				var mag float64
				for _, v := range x[g*group : (g+1)*group] {
					mag += math.Abs(float64(v))
				}
				if d := math.Abs(float64(sums[g] - wantSums[g])); d > 1e-6*mag {
					t.Fatalf("%d-bit g%d: sum %d = %v, groupSums %v", bits, group, g, sums[g], wantSums[g])
				}
			}
		}
	}
}
