package runtime_test

import (
	"os"
	"testing"

	"github.com/fmoe/fmoe/cuda"
	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
)

// testBackend is the backend the engine tests (and the HF parity test) run
// on: the CPU backend, or the CUDA backend with FMOE_BACKEND=cuda (run on a
// GPU machine: CGO_ENABLED=0 go test -c ./runtime && FMOE_BACKEND=cuda ./runtime.test).
func testBackend(t *testing.T) runtime.Backend {
	t.Helper()
	if os.Getenv("FMOE_BACKEND") == "cuda" {
		b, err := cuda.NewBackend(cuda.Options{CacheBytes: 1 << 30})
		if err != nil {
			t.Fatalf("cuda backend: %v", err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("cuda Close: %v", err)
			}
		})
		return b
	}
	return cpu.New()
}
