package pack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/internal/filecopy"
	"github.com/fmoe/fmoe/internal/progress"
)

// Checksum manifest constants.
const (
	ChecksumsFile   = "checksums.json"
	ChecksumsFormat = "fmoe-checksums/1"
)

// ErrChecksums reports a malformed checksums.json.
var ErrChecksums = errors.New("pack: bad checksums.json")

// FileSum is one file's entry in checksums.json.
type FileSum struct {
	Size int64  `json:"size"`
	Hash string `json:"hash"` // 16 lowercase hex digits of XXH3-64
}

// Checksums is checksums.json: the size and hash of every finished output
// file of a directory written by extract, pack-experts or requant. It is
// safe for concurrent use.
type Checksums struct {
	Format    string             `json:"format"`    // ChecksumsFormat
	Algorithm string             `json:"algorithm"` // filecopy.Algorithm ("xxh3-64")
	Files     map[string]FileSum `json:"files"`
	mu        sync.Mutex
}

// NewChecksums returns an empty manifest.
func NewChecksums() *Checksums {
	return &Checksums{Format: ChecksumsFormat, Algorithm: filecopy.Algorithm, Files: map[string]FileSum{}}
}

// ParseChecksums parses and checks checksums.json: known format and
// algorithm, plain file names, non-negative sizes, 16-hex-digit hashes.
func ParseChecksums(data []byte) (*Checksums, error) {
	c := NewChecksums()
	c.Files = nil
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrChecksums, err)
	}
	if c.Format != ChecksumsFormat || c.Algorithm != filecopy.Algorithm {
		return nil, fmt.Errorf("%w: format %q algorithm %q, want %q %q", ErrChecksums, c.Format, c.Algorithm, ChecksumsFormat, filecopy.Algorithm)
	}
	if c.Files == nil {
		return nil, fmt.Errorf("%w: no files", ErrChecksums)
	}
	for name, s := range c.Files {
		if name == "" || filepath.Base(name) != name || name == "." || name == ".." || strings.ContainsRune(name, '\\') {
			return nil, fmt.Errorf("%w: %q is not a plain file name", ErrChecksums, name)
		}
		if _, err := strconv.ParseUint(s.Hash, 16, 64); err != nil || len(s.Hash) != 16 || s.Size < 0 {
			return nil, fmt.Errorf("%w: %s: size %d hash %q", ErrChecksums, name, s.Size, s.Hash)
		}
	}
	return c, nil
}

// ReadChecksums reads dir/checksums.json. A missing file gives an error
// wrapping fs.ErrNotExist.
func ReadChecksums(dir string) (*Checksums, error) {
	path := filepath.Join(dir, ChecksumsFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseChecksums(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Set records a file.
func (c *Checksums) Set(name string, size int64, hash uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Files[name] = FileSum{Size: size, Hash: filecopy.FormatHash(hash)}
}

// Get returns a file's entry.
func (c *Checksums) Get(name string) (FileSum, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.Files[name]
	return s, ok
}

// Write stores the manifest atomically as dir/checksums.json.
func (c *Checksums) Write(ctx context.Context, dir string) error {
	c.mu.Lock()
	data, err := json.MarshalIndent(c, "", "  ")
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return atomicfile.Write(ctx, filepath.Join(dir, ChecksumsFile), 0o644, func(f *os.File) error {
		_, err := f.Write(append(data, '\n'))
		return err
	})
}

// Matches reports whether dir/name exists with the given size and its
// content hashes to the recorded entry (prev may be nil: no match). It is
// how re-runs skip finished outputs.
func Matches(ctx context.Context, prev *Checksums, dir, name string, size int64, cnt progress.Counter) bool {
	if prev == nil {
		return false
	}
	s, ok := prev.Get(name)
	if !ok || s.Size != size {
		return false
	}
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
		return false
	}
	_, h, err := filecopy.HashFile(ctx, filepath.Join(dir, name), cnt)
	return err == nil && filecopy.FormatHash(h) == s.Hash
}
