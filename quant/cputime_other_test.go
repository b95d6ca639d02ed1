//go:build !unix

package quant

func cpuSeconds() float64 { return 0 }
