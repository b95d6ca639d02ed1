//go:build linux

package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing [off, off+n) of f back to
// disk now (sync_file_range SYNC_FILE_RANGE_WRITE: it does not wait for
// completion), so that the fsync of Commit finds little left to flush and
// large outputs stream to disk while they are produced. Errors are ignored:
// this is only a hint; Commit's fsync reports real failures.
func startWriteback(f *os.File, off int64, n int) {
	_ = unix.SyncFileRange(int(f.Fd()), off, int64(n), unix.SYNC_FILE_RANGE_WRITE)
}
