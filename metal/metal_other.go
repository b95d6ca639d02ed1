//go:build !darwin

package metal

import "fmt"

func notSupported() error {
	return fmt.Errorf("%w: Metal exists only on macOS", ErrNotSupported)
}
