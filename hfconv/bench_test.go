package hfconv

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/quant"
)

// memSrc serves one BF16 matrix from memory.
type memSrc struct {
	info formats.TensorInfo
	data []byte
}

func (m memSrc) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	return copy(p, m.data[off:]), nil
}

type memReader struct{ m *memSrc }

func (r memReader) info(string) (formats.TensorInfo, io.ReaderAt, error) { return r.m.info, r.m, nil }

// benchMatrix is an expert-shaped BF16 projection stack: 16 × [1024, 4096].
func benchMatrix(b *testing.B) (*memSrc, *Module) {
	rows, cols := 16*1024, 4096
	r := rand.New(rand.NewPCG(1, 1))
	data := make([]byte, 2*rows*cols)
	for i := 0; i < rows*cols; i++ {
		h := quant.F32ToBF16(float32(r.NormFloat64()) * 0.02)
		data[2*i], data[2*i+1] = byte(h), byte(h>>8)
	}
	m := &memSrc{info: formats.TensorInfo{Name: "w", DType: formats.BF16, Shape: []int64{int64(rows), int64(cols)}, Size: int64(len(data))}, data: data}
	mod := &Module{Name: "w", Shape: []int64{int64(rows), int64(cols)}, Bits: 4, GroupSize: 64,
		src: matrixSource{Rows: rows, Cols: cols, Parts: []part{{Src: "w", N: rows}}}}
	return m, mod
}

// BenchmarkConvertBF16 measures BF16 → 4-bit conversion in bytes of BF16
// input per second: on one core (workers=1) and on all cores, beside
// BenchmarkDiskRead, which reads a file of the same size (see
// `make bench-hfconv` for the page-cache-cold variant).
func BenchmarkConvertBF16(b *testing.B) {
	src, mod := benchMatrix(b)
	nblocks := (mod.src.Rows + blockRows(mod.src.Cols) - 1) / blockRows(mod.src.Cols)
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(int64(len(src.data)))
			for i := 0; i < b.N; i++ {
				c := &converter{src: memReader{src}, opt: Options{FP8Block: 128}, cache: newBlockCache(nblocks)}
				var wg sync.WaitGroup
				next := make(chan int, nblocks)
				for k := 0; k < nblocks; k++ {
					next <- k
				}
				close(next)
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for k := range next {
							if _, err := c.quantBlock(mod, k); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				wg.Wait()
			}
		})
	}
}

// BenchmarkDiskRead reads a file as large as BenchmarkConvertBF16's input
// in 4 MiB chunks (from the page cache unless it was dropped).
func BenchmarkDiskRead(b *testing.B) {
	src, _ := benchMatrix(b)
	path := filepath.Join(b.TempDir(), "bf16.bin")
	if err := os.WriteFile(path, src.data, 0o644); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(src.data)))
	for i := 0; i < b.N; i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := f.Read(buf); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
	}
}
