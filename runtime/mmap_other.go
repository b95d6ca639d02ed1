//go:build !unix

package runtime

import "os"

// mapFile reads f into memory (no mmap on this platform).
func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	return readWhole(f, size)
}
