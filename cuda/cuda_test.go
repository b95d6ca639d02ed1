package cuda

import (
	"errors"
	"os"
	"testing"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/backendtest"
)

// openOrSkip opens a backend or skips the test when no GPU is usable here,
// unless FMOE_REQUIRE_CUDA=1 forbids skipping.
func openOrSkip(t testing.TB, opts Options) *Backend {
	t.Helper()
	b, err := Open(opts)
	if err != nil {
		if os.Getenv("FMOE_REQUIRE_CUDA") != "1" && (errors.Is(err, ErrNoCUDA) || errors.Is(err, ErrNoDevice)) {
			t.Skipf("no CUDA here: %v", err)
		}
		t.Fatalf("Open: %v", err)
	}
	return b
}

func TestConformance(t *testing.T) {
	b := openOrSkip(t, Options{})
	t.Logf("device %+v", b.Info())
	b.Close()
	backendtest.Run(t, func(t *testing.T) runtime.Backend { return openOrSkip(t, Options{}) })
}

// TestConformanceSmallCache runs the suite with a GPU expert cache of 12
// experts and no whole-layer fill, so MoE goes through read-back, misses,
// eviction and token chunking.
func TestConformanceSmallCache(t *testing.T) {
	openOrSkip(t, Options{}).Close()
	var last *Backend
	backendtest.Run(t, func(t *testing.T) runtime.Backend {
		last = openOrSkip(t, Options{CacheExperts: 12, NoLayerFill: true})
		return statsLogger{last, t}
	})
}

// statsLogger logs the expert counters when the suite closes the backend.
type statsLogger struct {
	*Backend
	t *testing.T
}

func (s statsLogger) Close() error {
	st := s.Stats()
	if st.Slots > 0 {
		s.t.Logf("experts: hits %d misses %d loads %d evictions %d syncs %d slots %d", st.Hits, st.Misses, st.Loads, st.Evictions, st.Syncs, st.Slots)
		if st.Slots > 12 {
			s.t.Errorf("cache has %d slots, capped at 12", st.Slots)
		}
	}
	return s.Backend.Close()
}

func TestNoCUDAError(t *testing.T) {
	err := Available()
	if err == nil {
		t.Skip("CUDA libraries load here")
	}
	if !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("Available() = %v, want ErrNoCUDA", err)
	}
	if _, err := NewBackend(Options{}); !errors.Is(err, ErrNoCUDA) {
		t.Fatalf("NewBackend without CUDA = %v, want ErrNoCUDA", err)
	}
}
