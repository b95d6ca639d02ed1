//go:build linux && !android && (amd64 || arm64)

package cuda

import (
	"errors"
	"fmt"

	"github.com/ebitengine/purego"
)

// bind opens the first library of names that loads and resolves every symbol.
func bind(names []string, syms []symbol) error {
	var errs []error
	for _, name := range names {
		h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range syms {
			var perr error
			for _, n := range s.names {
				p, err := purego.Dlsym(h, n)
				if err == nil && p != 0 {
					*s.ptr = p
					perr = nil
					break
				}
				perr = fmt.Errorf("%s: symbol %s missing", name, n)
			}
			if perr != nil {
				return perr
			}
		}
		return nil
	}
	return errors.Join(errs...)
}

// call invokes a C function with integer/pointer arguments. Pointers to Go
// memory must be converted with uintptr(unsafe.Pointer(p)) in the call
// expression itself, so that they escape to the (non-moving) heap.
//
//go:uintptrescapes
func call(fn uintptr, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(fn, args...)
	return r
}

// cstring returns a NUL-terminated copy of s.
func cstring(s string) []byte { return append([]byte(s), 0) }
