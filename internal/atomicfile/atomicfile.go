package atomicfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Sentinel errors.
var (
	// ErrOutOfRange reports a WriteAt past the size given to Create.
	ErrOutOfRange = errors.New("atomicfile: write past the declared size")
	// ErrDone reports use of a File after Commit or Abort.
	ErrDone = errors.New("atomicfile: file already committed or aborted")
)

// tempMarker is the part of every temporary name that IsTemp looks for.
const tempMarker = ".fmoe-tmp-"

// IsTemp reports whether base (a file name without directory) is a temporary
// file left by this package, e.g. after the process was killed.
func IsTemp(base string) bool {
	return strings.HasPrefix(base, ".") && strings.Contains(base, tempMarker)
}

func createTemp(dir, name string) (*os.File, error) {
	if name == "" || strings.ContainsRune(name, os.PathSeparator) {
		return nil, fmt.Errorf("atomicfile: bad file name %q", name)
	}
	f, err := os.CreateTemp(dir, "."+name+tempMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Join(dir, name), err)
	}
	return f, nil
}

// Write creates path atomically: fn writes the content into a temporary file
// in the same directory; then the file gets mode perm, is synced, closed and
// renamed to path, and the directory is synced. If fn fails, ctx is canceled
// (checked before and after fn; fn should check it while it works), or any
// step fails, the temporary file is removed and path is left untouched.
func Write(ctx context.Context, path string, perm os.FileMode, fn func(f *os.File) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := createTemp(dir, name)
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := fn(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return finish(f, tmp, path, dir)
}

// finish syncs and closes f, renames tmp to path and syncs dir.
func finish(f *os.File, tmp, path, dir string) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// File is a fixed-size output filled by concurrent positioned writes. It
// lives under a temporary name until Commit. Always pair Create with
// `defer f.Abort()`: Abort after Commit does nothing.
type File struct {
	f    *os.File
	tmp  string
	path string
	dir  string
	size int64
	mu   sync.Mutex
	done bool
	perm os.FileMode
}

// Create makes a temporary file of exactly size bytes in dir that becomes
// dir/name on Commit. The space is reserved up front where the file system
// supports it, so a full disk is usually reported here rather than midway.
func Create(dir, name string, size int64) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("atomicfile: negative size %d for %s", size, name)
	}
	f, err := createTemp(dir, name)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	if err := preallocate(f, size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("allocate %d bytes for %s: %w", size, path, err)
	}
	return &File{f: f, tmp: f.Name(), path: path, dir: dir, size: size, perm: 0o644}, nil
}

// Name returns the final path (dir/name).
func (f *File) Name() string { return f.path }

// TempName returns the temporary path the data is written to.
func (f *File) TempName() string { return f.tmp }

// Size returns the size given to Create.
func (f *File) Size() int64 { return f.size }

// SetPerm sets the mode the file gets on Commit (default 0644).
func (f *File) SetPerm(perm os.FileMode) { f.perm = perm }

// writebackMin is the smallest write after which WriteAt starts writeback
// of the written range (small writes are left to the page cache).
const writebackMin = 1 << 20

// WriteAt writes p at off. It is safe for concurrent use on disjoint ranges.
// Writes outside [0, Size) fail with ErrOutOfRange.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > f.size || int64(len(p)) > f.size-off {
		return 0, fmt.Errorf("%w: %d bytes at %d in %s (size %d)", ErrOutOfRange, len(p), off, f.path, f.size)
	}
	n, err := f.f.WriteAt(p, off)
	if err != nil {
		return n, fmt.Errorf("write %s: %w", f.path, err)
	}
	if n >= writebackMin {
		startWriteback(f.f, off, n)
	}
	return n, nil
}

// ReadAt reads back what was written (e.g. to checksum it before Commit).
func (f *File) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

// Commit syncs and closes the file, renames it to its final name and syncs
// the directory. On failure the temporary file is removed.
func (f *File) Commit() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return fmt.Errorf("commit %s: %w", f.path, ErrDone)
	}
	f.done = true
	err := f.f.Chmod(f.perm)
	if err == nil {
		err = finish(f.f, f.tmp, f.path, f.dir)
	} else {
		err = fmt.Errorf("commit %s: %w", f.path, err)
	}
	if err != nil {
		f.f.Close()
		os.Remove(f.tmp)
	}
	return err
}

// Abort closes and removes the temporary file. It is a no-op after Commit or
// a previous Abort, so `defer f.Abort()` is always safe.
func (f *File) Abort() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return nil
	}
	f.done = true
	f.f.Close()
	if err := os.Remove(f.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("abort %s: %w", f.path, err)
	}
	return nil
}
