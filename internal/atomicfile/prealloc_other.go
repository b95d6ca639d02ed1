//go:build !linux

package atomicfile

import "os"

// preallocate sets the file size (sparse where supported).
func preallocate(f *os.File, size int64) error { return f.Truncate(size) }
