// Package atomicfiletest holds test helpers for code that writes outputs:
// a tiny file system to provoke ENOSPC, and a check that no temporary files
// were left behind.
package atomicfiletest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/fmoe/fmoe/internal/atomicfile"
)

// SmallFS mounts a tmpfs of size bytes on a fresh directory and returns it;
// it is unmounted when the test ends. The test is skipped where mounting is
// not permitted (not Linux, not root, no mount binary, a restricted sandbox).
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("small tmpfs needs root on Linux")
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// NoTemps fails the test if dir (recursively) holds temporary files of
// package atomicfile.
func NoTemps(t testing.TB, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && atomicfile.IsTemp(d.Name()) {
			t.Errorf("temporary file left behind: %s", path)
		}
		return nil
	})
}
