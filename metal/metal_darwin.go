//go:build darwin

package metal

import "fmt"

func notSupported() error {
	return fmt.Errorf("%w: the Metal backend is not implemented yet (use --backend cpu)", ErrNotSupported)
}
