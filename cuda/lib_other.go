//go:build !(linux && !android && (amd64 || arm64))

package cuda

import "errors"

// bind always fails: this platform cannot load the CUDA libraries.
func bind(names []string, syms []symbol) error {
	return errors.New("loading CUDA libraries is not supported on this platform")
}

func call(fn uintptr, args ...uintptr) uintptr { return 999 }

func cstring(s string) []byte { return append([]byte(s), 0) }
