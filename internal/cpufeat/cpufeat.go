// Package cpufeat reports the CPU features fmoe's SIMD kernels dispatch on,
// read once at start-up through github.com/klauspost/cpuid/v2 (which also
// checks that the OS saves the wide registers).
package cpufeat

import "github.com/klauspost/cpuid/v2"

var (
	// AVX2FMA: 256-bit integer SIMD and fused multiply-add (Haswell and later).
	AVX2FMA = cpuid.CPU.Supports(cpuid.AVX2, cpuid.FMA3)
	// AVX512: AVX-512 F, BW, DQ and VL (Skylake-SP and later).
	AVX512 = cpuid.CPU.Supports(cpuid.AVX512F, cpuid.AVX512BW, cpuid.AVX512DQ, cpuid.AVX512VL)
)

// Summary names the features in use, for logs and benchmark records.
func Summary() string {
	switch {
	case AVX512 && AVX2FMA:
		return "avx512+avx2+fma"
	case AVX2FMA:
		return "avx2+fma"
	default:
		return "generic"
	}
}
