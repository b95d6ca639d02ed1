//go:build unix

package runtime

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile maps f read-only. The returned release function unmaps it.
func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	if size == 0 {
		return nil, func() error { return nil }, nil
	}
	if int64(int(size)) != size {
		return nil, nil, fmt.Errorf("runtime: %s: %d bytes cannot be mapped on this platform", f.Name(), size)
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return readWhole(f, size)
	}
	return b, func() error { return syscall.Munmap(b) }, nil
}
