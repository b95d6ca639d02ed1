//go:build !linux

package atomicfile

import "os"

// startWriteback is a no-op where sync_file_range does not exist; Commit's
// fsync flushes everything.
func startWriteback(*os.File, int64, int) {}
