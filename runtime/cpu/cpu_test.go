package cpu_test

import (
	"testing"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/backendtest"
	"github.com/fmoe/fmoe/runtime/cpu"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) runtime.Backend { return cpu.New() })
}

func TestConformanceOneThread(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) runtime.Backend { return cpu.NewWithOptions(cpu.Options{Threads: 1}) })
}
