package metal

import (
	"errors"

	"github.com/fmoe/fmoe/runtime"
)

// ErrNotSupported reports that no Metal backend is available in this build.
var ErrNotSupported = errors.New("metal: backend not supported here")

// Options configure NewBackend (none yet).
type Options struct{}

// NewBackend returns an error wrapping ErrNotSupported.
func NewBackend(Options) (runtime.Backend, error) { return nil, notSupported() }
