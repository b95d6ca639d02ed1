package formats

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// MaxSafetensorsHeader caps the JSON header size accepted by
// ReadSafetensorsHeader (the Python library's own cap is 100 MB as well).
const MaxSafetensorsHeader = 100 << 20

// TensorInfo locates one tensor in a safetensors file.
type TensorInfo struct {
	Name   string
	DType  DType
	Shape  []int64
	Offset int64 // absolute byte offset of the tensor data in the file
	Size   int64 // bytes
}

// SafetensorsHeader is a parsed and validated safetensors header.
type SafetensorsHeader struct {
	HeaderLen  int64        // length of the JSON header (the 8-byte prefix value)
	DataOffset int64        // 8 + HeaderLen: where the data area starts
	Tensors    []TensorInfo // sorted by Offset (then Name)
	Metadata   map[string]string
}

// Tensor returns the named tensor.
func (h *SafetensorsHeader) Tensor(name string) (TensorInfo, bool) {
	for _, t := range h.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

type rawTensor struct {
	DType       *string `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// ReadSafetensorsHeader reads and validates the header of a safetensors file
// of fileSize bytes:
//
//	u64 little-endian N | N bytes of JSON object | data area
//
// The JSON maps tensor names to {"dtype", "shape", "data_offsets":[begin,end]}
// (offsets relative to the data area) plus an optional "__metadata__" object
// of string values. Validation: N ≤ MaxSafetensorsHeader and 8+N ≤ fileSize
// (ErrHeader); a JSON object without duplicate keys (ErrHeader); known dtypes
// (ErrDType); begin ≤ end ≤ data size and no two tensors overlapping
// (ErrOffsets); end−begin == product(shape)×dtype size (ErrOffsets and
// ErrShape). Errors name the tensor at fault.
func ReadSafetensorsHeader(r io.ReaderAt, fileSize int64) (*SafetensorsHeader, error) {
	var prefix [8]byte
	if fileSize < 8 {
		return nil, fmt.Errorf("%w: file of %d bytes is shorter than the 8-byte length prefix", ErrHeader, fileSize)
	}
	if _, err := r.ReadAt(prefix[:], 0); err != nil {
		return nil, fmt.Errorf("%w: reading length prefix: %v", ErrHeader, err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > MaxSafetensorsHeader {
		return nil, fmt.Errorf("%w: header length %d exceeds the %d-byte cap", ErrHeader, n, MaxSafetensorsHeader)
	}
	if int64(n) > fileSize-8 {
		return nil, fmt.Errorf("%w: header length %d runs past the end of the %d-byte file", ErrHeader, n, fileSize)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, fmt.Errorf("%w: reading %d header bytes: %v", ErrHeader, n, err)
	}
	h := &SafetensorsHeader{HeaderLen: int64(n), DataOffset: 8 + int64(n)}
	if err := h.parse(buf, fileSize-h.DataOffset); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *SafetensorsHeader) parse(buf []byte, dataLen int64) error {
	dec := json.NewDecoder(bytes.NewReader(buf))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return fmt.Errorf("%w: not a JSON object", ErrHeader)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: invalid JSON: %v", ErrHeader, err)
		}
		name, ok := tok.(string)
		if !ok {
			return fmt.Errorf("%w: invalid JSON key", ErrHeader)
		}
		if seen[name] {
			return fmt.Errorf("%w: duplicate key %q", ErrHeader, name)
		}
		seen[name] = true
		if name == "__metadata__" {
			var md map[string]string
			if err := dec.Decode(&md); err != nil {
				return fmt.Errorf("%w: __metadata__ must map strings to strings: %v", ErrHeader, err)
			}
			h.Metadata = md
			continue
		}
		var rt rawTensor
		if err := dec.Decode(&rt); err != nil {
			return fmt.Errorf("%w: tensor %q: %v", ErrHeader, name, err)
		}
		ti, err := rt.info(name, dataLen)
		if err != nil {
			return err
		}
		ti.Offset += h.DataOffset
		h.Tensors = append(h.Tensors, ti)
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: invalid JSON: %v", ErrHeader, err)
	}
	// Only padding may follow the object.
	if len(bytes.TrimRight(buf[dec.InputOffset():], " \t\r\n")) != 0 {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrHeader)
	}
	sort.Slice(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Offset != b.Offset {
			return a.Offset < b.Offset
		}
		return a.Name < b.Name
	})
	for i := 1; i < len(h.Tensors); i++ {
		p, t := h.Tensors[i-1], h.Tensors[i]
		if t.Offset < p.Offset+p.Size {
			return fmt.Errorf("%w: tensor %q [%d,%d) overlaps tensor %q [%d,%d)", ErrOffsets,
				t.Name, t.Offset-h.DataOffset, t.Offset-h.DataOffset+t.Size,
				p.Name, p.Offset-h.DataOffset, p.Offset-h.DataOffset+p.Size)
		}
	}
	return nil
}

func (rt *rawTensor) info(name string, dataLen int64) (TensorInfo, error) {
	if rt.DType == nil || rt.Shape == nil || rt.DataOffsets == nil {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q lacks dtype, shape or data_offsets", ErrHeader, name)
	}
	dt := DType(*rt.DType)
	if !dt.Valid() {
		return TensorInfo{}, fmt.Errorf("%w %q in tensor %q", ErrDType, *rt.DType, name)
	}
	if len(rt.DataOffsets) != 2 {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: data_offsets has %d entries, want 2", ErrOffsets, name, len(rt.DataOffsets))
	}
	b, e := rt.DataOffsets[0], rt.DataOffsets[1]
	if b < 0 || e < b || e > dataLen {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: data_offsets [%d,%d] outside the %d-byte data area", ErrOffsets, name, b, e, dataLen)
	}
	size, err := ByteSize(dt, rt.Shape)
	if err != nil {
		return TensorInfo{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	if size != e-b {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: span of %d bytes does not match shape %v of %s (%d bytes): %w",
			ErrOffsets, name, e-b, rt.Shape, dt, size, ErrShape)
	}
	return TensorInfo{Name: name, DType: dt, Shape: rt.Shape, Offset: b, Size: size}, nil
}

// TensorSpec describes a tensor to be written: everything but its bytes.
type TensorSpec struct {
	Name  string
	DType DType
	Shape []int64
}

// TensorBlob is a tensor with its little-endian row-major bytes.
type TensorBlob struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// PlanSafetensors lays out a safetensors file for the given tensors, in the
// given order, packed back to back from the start of the data area. It
// returns the complete file prefix (8-byte length + JSON header padded with
// spaces to a multiple of 8, as the Python library does) and the absolute
// position of every tensor, so that bodies can be streamed or written at
// fixed offsets afterwards. Total file size = len(prefix) + Σ sizes.
func PlanSafetensors(specs []TensorSpec, metadata map[string]string) (prefix []byte, infos []TensorInfo, err error) {
	var hdr bytes.Buffer
	hdr.WriteByte('{')
	first := true
	comma := func() {
		if !first {
			hdr.WriteByte(',')
		}
		first = false
	}
	if len(metadata) > 0 {
		md, err := json.Marshal(metadata) // sorted keys
		if err != nil {
			return nil, nil, err
		}
		comma()
		hdr.WriteString(`"__metadata__":`)
		hdr.Write(md)
	}
	seen := map[string]bool{}
	var off int64
	for _, s := range specs {
		if s.Name == "" || s.Name == "__metadata__" || seen[s.Name] {
			return nil, nil, fmt.Errorf("%w: tensor name %q empty, reserved or duplicated", ErrHeader, s.Name)
		}
		seen[s.Name] = true
		size, err := ByteSize(s.DType, s.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", s.Name, err)
		}
		name, _ := json.Marshal(s.Name)
		shape := s.Shape
		if shape == nil {
			shape = []int64{}
		}
		sh, _ := json.Marshal(shape)
		comma()
		fmt.Fprintf(&hdr, `%s:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`, name, s.DType, sh, off, off+size)
		infos = append(infos, TensorInfo{Name: s.Name, DType: s.DType, Shape: shape, Offset: off, Size: size})
		off += size
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	if hdr.Len() > MaxSafetensorsHeader {
		return nil, nil, fmt.Errorf("%w: header of %d bytes exceeds the cap", ErrHeader, hdr.Len())
	}
	prefix = make([]byte, 8, 8+hdr.Len())
	binary.LittleEndian.PutUint64(prefix, uint64(hdr.Len()))
	prefix = append(prefix, hdr.Bytes()...)
	for i := range infos {
		infos[i].Offset += int64(len(prefix))
	}
	return prefix, infos, nil
}

// WriteSafetensors writes a complete safetensors file: tensors in the given
// order, metadata (may be nil) under "__metadata__". Each blob's Data must be
// exactly product(Shape)×dtype size bytes.
func WriteSafetensors(w io.Writer, tensors []TensorBlob, metadata map[string]string) error {
	specs := make([]TensorSpec, len(tensors))
	for i, t := range tensors {
		specs[i] = TensorSpec{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	prefix, infos, err := PlanSafetensors(specs, metadata)
	if err != nil {
		return err
	}
	for i, t := range tensors {
		if int64(len(t.Data)) != infos[i].Size {
			return fmt.Errorf("%w: tensor %q has %d bytes, shape %v of %s needs %d", ErrShape, t.Name, len(t.Data), t.Shape, t.DType, infos[i].Size)
		}
	}
	if _, err := w.Write(prefix); err != nil {
		return err
	}
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return fmt.Errorf("writing tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

// SafetensorsIndex is model.safetensors.index.json.
type SafetensorsIndex struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// ParseSafetensorsIndex parses and checks an index: weight_map must be
// present and non-empty, and every shard must be a plain file name (no
// directories, no "..") so that it cannot point outside the checkpoint.
func ParseSafetensorsIndex(data []byte) (*SafetensorsIndex, error) {
	var idx SafetensorsIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIndex, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("%w: weight_map missing or empty", ErrIndex)
	}
	for name, file := range idx.WeightMap {
		if !safeFileName(file) {
			return nil, fmt.Errorf("%w: tensor %q maps to unsafe shard name %q", ErrIndex, name, file)
		}
	}
	return &idx, nil
}

// Shards returns the distinct shard names of the index, sorted.
func (idx *SafetensorsIndex) Shards() []string {
	set := map[string]bool{}
	for _, f := range idx.WeightMap {
		set[f] = true
	}
	out := make([]string, 0, len(set))
	for f := range set {
		out = append(out, f)
	}
	sort.Strings(out)
	return out
}

// safeFileName reports whether s is a plain, relative file name.
func safeFileName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00")
}
