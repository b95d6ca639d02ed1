//go:build linux

package atomicfile

import (
	"errors"
	"os"
	"syscall"
)

// preallocate reserves size bytes with fallocate so ENOSPC surfaces at once;
// file systems without fallocate get a sparse truncate instead.
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, 0, size)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
			return f.Truncate(size)
		default:
			return err
		}
	}
}
