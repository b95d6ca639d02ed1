package metal_test

import (
	"errors"
	"testing"

	"github.com/fmoe/fmoe/metal"
)

func TestNotSupported(t *testing.T) {
	b, err := metal.NewBackend(metal.Options{})
	if b != nil || !errors.Is(err, metal.ErrNotSupported) {
		t.Fatalf("NewBackend = %v, %v; want ErrNotSupported", b, err)
	}
}
