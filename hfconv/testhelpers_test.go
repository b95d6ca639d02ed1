package hfconv

import "io"

type ioReaderAt = io.ReaderAt

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}
