package filecopy

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/fmoe/fmoe/internal/progress"
	"github.com/zeebo/xxh3"
)

// Algorithm names the file hash used in checksum manifests.
const Algorithm = "xxh3-64"

// FormatHash writes a hash as 16 lowercase hex digits.
func FormatHash(h uint64) string {
	s := strconv.FormatUint(h, 16)
	for len(s) < 16 {
		s = "0" + s
	}
	return s
}

// hashBufSize is the read size of HashFile.
const hashBufSize = 4 << 20

// HashReader hashes size bytes of r from offset 0, checking ctx between
// reads and reporting bytes to c. A source shorter than size is an error
// wrapping io.ErrUnexpectedEOF.
func HashReader(ctx context.Context, r io.ReaderAt, size int64, c progress.Counter) (uint64, error) {
	h := xxh3.New()
	buf := make([]byte, min(size, hashBufSize))
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		n := int(min(int64(len(buf)), size-off))
		m, err := r.ReadAt(buf[:n], off)
		if m < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		h.Write(buf[:n])
		off += int64(n)
		progress.Or(c).Add(int64(n))
	}
	return h.Sum64(), nil
}

// HashFile returns the size and hash of the file at path.
func HashFile(ctx context.Context, path string, c progress.Counter) (size int64, hash uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	hash, err = HashReader(ctx, f, fi.Size(), c)
	if err != nil {
		return 0, 0, fmt.Errorf("hash %s: %w", path, err)
	}
	return fi.Size(), hash, nil
}

// HashBytes hashes b.
func HashBytes(b []byte) uint64 { return xxh3.Hash(b) }
