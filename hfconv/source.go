package hfconv

import (
	"container/list"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"unsafe"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/quant"
)

// tensorReader reads raw bytes of the source (HF) tensors.
type tensorReader interface {
	info(name string) (formats.TensorInfo, io.ReaderAt, error)
}

// converter computes output bytes from the source tensors.
type converter struct {
	src   tensorReader
	opt   Options
	cache *blockCache

	scaleMu sync.Mutex
	scales  map[string][]float32 // FP8 block scales, loaded on first use
}

// blockRows is how many rows of a module are quantized together.
func blockRows(cols int) int { return max(1, (1<<20)/cols) }

// rows decodes rows [row, row+n) of a source tensor (flattened over its
// leading dimensions) into dst (n*cols float32), rounded to bf16 as the
// model dtype would hold them.
func (c *converter) rows(dst []float32, name string, row, n, cols int) error {
	info, err := c.info(name, cols)
	if err != nil {
		return err
	}
	es, _ := info.DType.Size()
	buf := make([]byte, n*cols*es)
	if err := c.raw(buf, name, row, n, cols); err != nil {
		return err
	}
	if err := decode(dst, buf, info.DType); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if info.DType == formats.F8E4M3 || info.DType == formats.F8E5M2 {
		if err := c.applyFP8Scales(dst, name, info, row, n, cols); err != nil {
			return err
		}
	}
	if info.DType != formats.BF16 {
		for i, v := range dst {
			dst[i] = quant.BF16ToF32(quant.F32ToBF16(v))
		}
	}
	return nil
}

// info returns a source tensor's description after checking its columns.
func (c *converter) info(name string, cols int) (formats.TensorInfo, error) {
	info, _, err := c.src.info(name)
	if err != nil {
		return info, err
	}
	if len(info.Shape) == 0 || int(info.Shape[len(info.Shape)-1]) != cols {
		return info, fmt.Errorf("%w: %s has shape %v, want %d columns", ErrSource, name, info.Shape, cols)
	}
	if _, err := info.DType.Size(); err != nil {
		return info, fmt.Errorf("%s: %w", name, err)
	}
	return info, nil
}

// raw reads the bytes of rows [row, row+n) of a source tensor (rows
// flattened over its leading dimensions, cols elements each) into dst.
func (c *converter) raw(dst []byte, name string, row, n, cols int) error {
	info, ra, err := c.src.info(name)
	if err != nil {
		return err
	}
	es, err := info.DType.Size()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	off := int64(row) * int64(cols) * int64(es)
	size := int64(n) * int64(cols) * int64(es)
	if off < 0 || off+size > info.Size || int64(len(dst)) != size {
		return fmt.Errorf("%w: %s: rows %d..%d past the end", ErrSource, name, row, row+n)
	}
	if _, err := ra.ReadAt(dst, info.Offset+off); err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	return nil
}

// decode widens little-endian elements of dtype into dst.
func decode(dst []float32, b []byte, dt formats.DType) error {
	switch dt {
	case formats.BF16:
		// Views of the little-endian bytes (Go allocations are aligned).
		quant.WidenBF16(dst, quant.U16s(b[:2*len(dst)]))
	case formats.F16:
		for i := range dst {
			dst[i] = f16ToF32(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
	case formats.F32:
		copy(dst, quant.F32s(b[:4*len(dst)]))
	case formats.F8E4M3:
		for i := range dst {
			dst[i] = fp8E4M3[b[i]]
		}
	case formats.F8E5M2:
		for i := range dst {
			dst[i] = fp8E5M2[b[i]]
		}
	default:
		return fmt.Errorf("%w: cannot convert dtype %s", ErrSource, dt)
	}
	return nil
}

// f16ToF32 widens an IEEE half.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0 && man == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		v := float32(man) / 1024 / 16384
		if sign != 0 {
			v = -v
		}
		return v
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// applyFP8Scales multiplies decoded FP8 rows by their block scales
// (<name>_scale_inv, [..., ceil(out/B), ceil(in/B)]).
func (c *converter) applyFP8Scales(dst []float32, name string, info formats.TensorInfo, row, n, cols int) error {
	sc, sshape, err := c.scaleOf(name)
	if err != nil {
		return err
	}
	b := c.opt.FP8Block
	out := int(info.Shape[len(info.Shape)-2])
	sr, scol := (out+b-1)/b, (cols+b-1)/b
	if len(sshape) != len(info.Shape) || int(sshape[len(sshape)-2]) != sr || int(sshape[len(sshape)-1]) != scol {
		return fmt.Errorf("%w: %s_scale_inv has shape %v, weight %v with %dx%d blocks needs [..., %d, %d]",
			ErrSource, name, sshape, info.Shape, b, b, sr, scol)
	}
	for i := 0; i < n; i++ {
		fr := row + i
		mat, r := fr/out, fr%out
		srow := sc[(mat*sr+r/b)*scol:]
		d := dst[i*cols : (i+1)*cols]
		for j := range d {
			d[j] *= srow[j/b]
		}
	}
	return nil
}

func (c *converter) scaleOf(name string) ([]float32, []int64, error) {
	sname := name + "_scale_inv"
	info, ra, err := c.src.info(sname)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: FP8 weight %s has no %s", ErrSource, name, sname)
	}
	c.scaleMu.Lock()
	defer c.scaleMu.Unlock()
	if s, ok := c.scales[sname]; ok {
		return s, info.Shape, nil
	}
	es, err := info.DType.Size()
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, info.Size)
	if _, err := ra.ReadAt(buf, info.Offset); err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", sname, err)
	}
	s := make([]float32, info.Size/int64(es))
	if err := decode(s, buf, info.DType); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", sname, err)
	}
	if c.scales == nil {
		c.scales = map[string][]float32{}
	}
	c.scales[sname] = s
	return s, info.Shape, nil
}

// block is one quantized row block of a module, as packed bytes.
type block struct {
	once    sync.Once
	err     error
	w, s, b []byte
}

type blockKey struct {
	mod *Module
	k   int
}

// blockCache keeps recently quantized blocks so that reading a module's
// weight, scales and biases quantizes each block once; concurrent readers
// of the same block wait for one computation.
type blockCache struct {
	mu    sync.Mutex
	max   int
	lru   *list.List // of blockKey, front = newest
	items map[blockKey]*list.Element
	vals  map[blockKey]*block
}

func newBlockCache(max int) *blockCache {
	return &blockCache{max: max, lru: list.New(), items: map[blockKey]*list.Element{}, vals: map[blockKey]*block{}}
}

func (bc *blockCache) get(key blockKey) *block {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if e, ok := bc.items[key]; ok {
		bc.lru.MoveToFront(e)
		return bc.vals[key]
	}
	b := &block{}
	bc.items[key] = bc.lru.PushFront(key)
	bc.vals[key] = b
	for bc.lru.Len() > bc.max {
		old := bc.lru.Remove(bc.lru.Back()).(blockKey)
		delete(bc.items, old)
		delete(bc.vals, old)
	}
	return b
}

// quantBlock returns block k of module m, computing it once.
func (c *converter) quantBlock(m *Module, k int) (*block, error) {
	b := c.cache.get(blockKey{m, k})
	b.once.Do(func() {
		br := blockRows(m.src.Cols)
		r0 := k * br
		n := min(br, m.src.Rows-r0)
		q, err := c.quantize(m, r0, n)
		if err != nil {
			b.err = err
			return
		}
		b.w = u32Bytes(q.W)
		b.s, b.b = u16Bytes(q.Scales), u16Bytes(q.Biases)
	})
	return b, b.err
}

// quantize quantizes rows [r0, r0+n) of module m. When every source part
// of those rows is BF16 (the common case: an original BF16 release), the raw
// bf16 bits go straight to quant.QuantizeBF16 with no float32 copy;
// otherwise rows are decoded (F16/F32/FP8 × scale), rounded to bf16 and
// quantized. Both give the same codes for the same values.
func (c *converter) quantize(m *Module, r0, n int) (*quant.Matrix, error) {
	cols := m.src.Cols
	var parts []part // the parts overlapping the rows, clipped to them
	allBF16 := true
	for _, p := range m.src.Parts {
		lo, hi := max(r0, p.Out), min(r0+n, p.Out+p.N)
		if lo >= hi {
			continue
		}
		info, err := c.info(p.Src, cols)
		if err != nil {
			return nil, err
		}
		allBF16 = allBF16 && info.DType == formats.BF16
		parts = append(parts, part{Src: p.Src, Out: lo - r0, Row: p.Row + lo - p.Out, N: hi - lo})
	}
	if allBF16 {
		raw := make([]uint16, n*cols)
		for _, p := range parts {
			if err := c.raw(u16Bytes(raw[p.Out*cols:(p.Out+p.N)*cols]), p.Src, p.Row, p.N, cols); err != nil {
				return nil, err
			}
		}
		q, err := quant.QuantizeBF16(raw, n, cols, m.Bits, m.GroupSize)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Name, err)
		}
		return q, nil
	}
	f := make([]float32, n*cols)
	for _, p := range parts {
		if err := c.rows(f[p.Out*cols:(p.Out+p.N)*cols], p.Src, p.Row, p.N, cols); err != nil {
			return nil, err
		}
	}
	q, err := quant.Quantize(f, n, cols, m.Bits, m.GroupSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	return q, nil
}

func u32Bytes(v []uint32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 4*len(v))
}

func u16Bytes(v []uint16) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), 2*len(v))
}

// moduleFile is the virtual file holding one component (0 weight, 1
// scales, 2 biases) of a quantized module.
type moduleFile struct {
	c    *converter
	m    *Module
	comp int
}

func (m *Module) rowBytes(comp int) int64 {
	if comp == 0 {
		return int64(m.src.Cols * m.Bits / 8)
	}
	return int64(m.src.Cols / m.GroupSize * 2)
}

// Tensors returns the three MLX tensor descriptions of the module.
func (m *Module) Tensors() [3]formats.TensorInfo {
	var t [3]formats.TensorInfo
	lead := m.Shape[:len(m.Shape)-1]
	cols := []int64{int64(m.src.Cols * m.Bits / 32), int64(m.src.Cols / m.GroupSize)}
	for comp, suf := range []string{".weight", ".scales", ".biases"} {
		dt, last := formats.BF16, cols[1]
		if comp == 0 {
			dt, last = formats.U32, cols[0]
		}
		t[comp] = formats.TensorInfo{Name: m.Name + suf, DType: dt, Shape: append(slices.Clone(lead), last),
			Size: int64(m.src.Rows) * m.rowBytes(comp)}
	}
	return t
}

func (f *moduleFile) ReadAt(p []byte, off int64) (int, error) {
	rb := f.m.rowBytes(f.comp)
	size := int64(f.m.src.Rows) * rb
	if off < 0 || off >= size {
		return 0, io.EOF
	}
	want := len(p)
	if int64(want) > size-off {
		p = p[:size-off]
	}
	br := int64(blockRows(f.m.src.Cols))
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		k := pos / (br * rb)
		b, err := f.c.quantBlock(f.m, int(k))
		if err != nil {
			return done, err
		}
		data := [3][]byte{b.w, b.s, b.b}[f.comp]
		done += copy(p[done:], data[pos-k*br*rb:])
	}
	if done < want {
		return done, io.EOF
	}
	return done, nil
}

// denseFile is the virtual file of one unquantized output tensor, computed
// whole on first read (norms, conv weights, dt_bias, A_log: small).
type denseFile struct {
	c    *converter
	d    *Dense
	once sync.Once
	data []byte
	err  error
}

func (f *denseFile) compute() {
	info, ra, err := f.c.src.info(f.d.Src)
	if err != nil {
		f.err = err
		return
	}
	if f.d.tr == keep {
		f.data = make([]byte, info.Size)
		_, f.err = ra.ReadAt(f.data, info.Offset)
		return
	}
	n, err := formats.NumElements(info.Shape)
	if err != nil {
		f.err = err
		return
	}
	vals := make([]float32, n)
	cols := int(info.Shape[len(info.Shape)-1])
	if err := f.c.rows(vals, f.d.Src, 0, int(n)/cols, cols); err != nil {
		f.err = err
		return
	}
	f.data = make([]byte, 2*n)
	for i, v := range vals {
		if f.d.tr == plusOne {
			v += 1
		}
		h := quant.F32ToBF16(v)
		f.data[2*i], f.data[2*i+1] = byte(h), byte(h>>8)
	}
}

func (f *denseFile) ReadAt(p []byte, off int64) (int, error) {
	f.once.Do(f.compute)
	if f.err != nil {
		return 0, f.err
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// size of a dense output in bytes.
func (d *Dense) size(src formats.TensorInfo) int64 {
	if d.tr == keep {
		return src.Size
	}
	n, _ := formats.NumElements(d.Shape)
	return 2 * n
}
