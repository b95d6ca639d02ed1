package checkpoint

import (
	"io"
	"sort"

	"github.com/fmoe/fmoe/formats"
)

// VirtualFile is a computed file of a virtual checkpoint.
type VirtualFile struct {
	Name   string
	Size   int64
	Reader io.ReaderAt
}

// NewVirtual builds a checkpoint whose files are computed on demand (for
// example an HF release seen as MLX tensors, package hfconv). Every tensor's
// Ref names one of files. closers are closed with the checkpoint (the
// underlying real checkpoint, typically).
func NewVirtual(dir string, cfg *formats.Config, tensors map[string]Ref, files []VirtualFile, closers ...io.Closer) *Checkpoint {
	c := &Checkpoint{Dir: dir, Config: cfg, Tensors: tensors, sizes: map[string]int64{},
		virtual: map[string]io.ReaderAt{}, closers: closers}
	for _, f := range files {
		c.virtual[f.Name] = f.Reader
		c.sizes[f.Name] = f.Size
		c.Files = append(c.Files, f.Name)
	}
	sort.Strings(c.Files)
	return c
}

// Readers returns, for each of files, the computed reader of a virtual file
// or nil for a real shard (callers open real shards by path themselves).
func (c *Checkpoint) Readers(files []string) []io.ReaderAt {
	rs := make([]io.ReaderAt, len(files))
	for i, f := range files {
		rs[i] = c.virtual[f]
	}
	return rs
}
