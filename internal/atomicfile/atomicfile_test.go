package atomicfile_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/atomicfile/atomicfiletest"
)

// failingWriter accepts limit bytes, then fails like a full disk.
type failingWriter struct {
	w     io.Writer
	limit int
}

func (fw *failingWriter) Write(p []byte) (int, error) {
	if len(p) > fw.limit {
		n, _ := fw.w.Write(p[:fw.limit])
		fw.limit = 0
		return n, syscall.ENOSPC
	}
	fw.limit -= len(p)
	return fw.w.Write(p)
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	want := []byte("hello, atomic world")
	err := atomicfile.Write(context.Background(), path, 0o600, func(f *os.File) error {
		if !atomicfile.IsTemp(filepath.Base(f.Name())) {
			t.Errorf("temp name %q not recognized by IsTemp", f.Name())
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("final name exists before the write finished: %v", err)
		}
		_, err := f.Write(want)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %q, %v; want %q", got, err, want)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if names := entries(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v, want only out.bin", names)
	}
}

func TestWriteFailures(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	errBoom := errors.New("boom")
	cases := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		fn   func(f *os.File, cancel context.CancelFunc) error
		want error
	}{
		{"writer fails", nil, func(f *os.File, _ context.CancelFunc) error {
			f.Write([]byte("partial"))
			return errBoom
		}, errBoom},
		{"disk full midway", nil, func(f *os.File, _ context.CancelFunc) error {
			_, err := io.Copy(&failingWriter{w: f, limit: 10}, bytes.NewReader(make([]byte, 100)))
			return err
		}, syscall.ENOSPC},
		{"canceled before", func() (context.Context, context.CancelFunc) { return canceled, func() {} },
			func(f *os.File, _ context.CancelFunc) error { return nil }, context.Canceled},
		{"canceled during", nil, func(f *os.File, cancel context.CancelFunc) error {
			f.Write([]byte("partial"))
			cancel()
			return nil
		}, context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out.bin")
			if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			if tc.ctx != nil {
				ctx, cancel = tc.ctx()
			}
			defer cancel()
			err := atomicfile.Write(ctx, path, 0o644, func(f *os.File) error { return tc.fn(f, cancel) })
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if got, _ := os.ReadFile(path); string(got) != "old" {
				t.Errorf("existing file changed to %q", got)
			}
			atomicfiletest.NoTemps(t, dir)
		})
	}
}

func TestWriteUnwritableDir(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, nil, 0o644)
	for _, path := range []string{filepath.Join(dir, "missing", "out"), filepath.Join(notDir, "out")} {
		err := atomicfile.Write(context.Background(), path, 0o644, func(*os.File) error { return nil })
		if err == nil {
			t.Errorf("Write(%s) succeeded", path)
		}
		if _, err := atomicfile.Create(filepath.Dir(path), "out", 10); err == nil {
			t.Errorf("Create(%s) succeeded", path)
		}
	}
}

func TestCreateParallel(t *testing.T) {
	dir := t.TempDir()
	const chunk, n = 4096, 64
	f, err := atomicfile.Create(dir, "big.bin", chunk*n)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("final name exists before Commit")
	}
	var wg sync.WaitGroup
	for i := n - 1; i >= 0; i-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := f.WriteAt(bytes.Repeat([]byte{byte(i)}, chunk), int64(i)*chunk); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := f.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if !bytes.Equal(got[i*chunk:(i+1)*chunk], bytes.Repeat([]byte{byte(i)}, chunk)) {
			t.Fatalf("chunk %d wrong", i)
		}
	}
	if err := f.Commit(); !errors.Is(err, atomicfile.ErrDone) {
		t.Errorf("second Commit: %v, want ErrDone", err)
	}
	atomicfiletest.NoTemps(t, dir)
}

func TestCreateAbortAndRange(t *testing.T) {
	dir := t.TempDir()
	f, err := atomicfile.Create(dir, "x.bin", 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{-1, 8, 11} {
		if _, err := f.WriteAt([]byte("abc"), off); !errors.Is(err, atomicfile.ErrOutOfRange) {
			t.Errorf("WriteAt(off %d) = %v, want ErrOutOfRange", off, err)
		}
	}
	if _, err := f.WriteAt([]byte("abc"), 7); err != nil {
		t.Errorf("WriteAt at the end: %v", err)
	}
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); !errors.Is(err, atomicfile.ErrDone) {
		t.Errorf("Commit after Abort: %v, want ErrDone", err)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("directory holds %v after Abort", names)
	}
}

func TestDiskFull(t *testing.T) {
	dir := atomicfiletest.SmallFS(t, 64<<10)
	// Create reserves space up front: too big fails at once.
	if _, err := atomicfile.Create(dir, "big.bin", 1<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Create past the free space: %v, want ENOSPC", err)
	}
	// A sequential writer that runs out of space midway.
	path := filepath.Join(dir, "seq.bin")
	err := atomicfile.Write(context.Background(), path, 0o644, func(f *os.File) error {
		_, err := f.Write(make([]byte, 1<<20))
		return err
	})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Write past the free space: %v, want ENOSPC", err)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("directory holds %v after ENOSPC", names)
	}
}

func TestIsTemp(t *testing.T) {
	for name, want := range map[string]bool{
		".layer_00.bin.fmoe-tmp-123": true,
		"layer_00.bin":               false,
		"x.fmoe-tmp-1":               false,
		".hidden":                    false,
	} {
		if got := atomicfile.IsTemp(name); got != want {
			t.Errorf("IsTemp(%q) = %v", name, got)
		}
	}
}

func ExampleWrite() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	err := atomicfile.Write(context.Background(), filepath.Join(dir, "a.txt"), 0o644, func(f *os.File) error {
		_, err := fmt.Fprintln(f, "complete or absent")
		return err
	})
	fmt.Println(err)
	// Output: <nil>
}
