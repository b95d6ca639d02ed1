//go:build !amd64 || noasm || !gc

package quant

func simdAvailable() bool { return false }

func testKernels(m *Matrix, x []float32) []*mvArgs { return []*mvArgs{newMVArgs(m, x)} }
