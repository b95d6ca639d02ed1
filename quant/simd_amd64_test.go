//go:build amd64 && !noasm && gc

package quant

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
