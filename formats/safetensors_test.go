package formats

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// rawFile builds a safetensors file from a literal JSON header and a data
// area of dataLen zero bytes.
func rawFile(header string, dataLen int) []byte {
	b := make([]byte, 8, 8+len(header)+dataLen)
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

func readHeader(b []byte) (*SafetensorsHeader, error) {
	return ReadSafetensorsHeader(bytes.NewReader(b), int64(len(b)))
}

func TestWriteReadSafetensors(t *testing.T) {
	blobs := []TensorBlob{
		{Name: "b.weight", DType: U32, Shape: []int64{2, 3}, Data: bytes.Repeat([]byte{1}, 24)},
		{Name: "a.scales", DType: BF16, Shape: []int64{5}, Data: bytes.Repeat([]byte{2}, 10)},
		{Name: "scalar", DType: F32, Shape: []int64{}, Data: []byte{0, 0, 128, 63}},
		{Name: "empty", DType: F8E4M3, Shape: []int64{0, 4}, Data: nil},
	}
	var buf bytes.Buffer
	if err := WriteSafetensors(&buf, blobs, map[string]string{"format": "mlx"}); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	n := binary.LittleEndian.Uint64(b)
	if n%8 != 0 {
		t.Errorf("header length %d not a multiple of 8", n)
	}
	h, err := readHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Metadata["format"] != "mlx" || h.DataOffset != 8+int64(n) {
		t.Errorf("metadata %v, data offset %d", h.Metadata, h.DataOffset)
	}
	for _, bl := range blobs {
		ti, ok := h.Tensor(bl.Name)
		if !ok {
			t.Fatalf("tensor %s missing", bl.Name)
		}
		if ti.DType != bl.DType || len(ti.Shape) != len(bl.Shape) || ti.Size != int64(len(bl.Data)) {
			t.Errorf("%s: got %+v", bl.Name, ti)
		}
		if got := b[ti.Offset : ti.Offset+ti.Size]; !bytes.Equal(got, bl.Data) && len(bl.Data) > 0 {
			t.Errorf("%s: data mismatch", bl.Name)
		}
	}
	for i := 1; i < len(h.Tensors); i++ {
		if h.Tensors[i].Offset < h.Tensors[i-1].Offset {
			t.Errorf("tensors not sorted by offset")
		}
	}
}

func TestReadSafetensorsHeaderErrors(t *testing.T) {
	good := `{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}`
	if _, err := readHeader(rawFile(good, 8)); err != nil {
		t.Fatalf("good header rejected: %v", err)
	}
	pastEOF := rawFile(good, 8)
	binary.LittleEndian.PutUint64(pastEOF, 1000)
	huge := rawFile(good, 8)
	binary.LittleEndian.PutUint64(huge, MaxSafetensorsHeader+1)
	cases := []struct {
		name string
		file []byte
		want []error
	}{
		{"short file", []byte{1, 2, 3}, []error{ErrHeader}},
		{"header length past EOF", pastEOF, []error{ErrHeader}},
		{"header over cap", huge, []error{ErrHeader}},
		{"non-JSON header", rawFile(`not json at all!`, 0), []error{ErrHeader}},
		{"JSON array", rawFile(`[1,2,3] `, 0), []error{ErrHeader}},
		{"truncated JSON", rawFile(`{"a":{"dtype":"BF16"`, 0), []error{ErrHeader}},
		{"trailing garbage", rawFile(good+`xx`, 8), []error{ErrHeader}},
		{"duplicate key", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), []error{ErrHeader}},
		{"missing field", rawFile(`{"a":{"dtype":"U8","shape":[1]}}`, 1), []error{ErrHeader}},
		{"bad metadata", rawFile(`{"__metadata__":{"x":1}}`, 0), []error{ErrHeader}},
		{"unknown dtype", rawFile(`{"a":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}`, 1), []error{ErrDType}},
		{"offsets out of range", rawFile(`{"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}}`, 8), []error{ErrOffsets}},
		{"negative offset", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, 8), []error{ErrOffsets}},
		{"inverted offsets", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[4,2]}}`, 8), []error{ErrOffsets}},
		{"three offsets", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}`, 8), []error{ErrOffsets}},
		{"overlapping", rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 8), []error{ErrOffsets}},
		{"not matching shape", rawFile(`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,6]}}`, 8), []error{ErrOffsets, ErrShape}},
		{"negative dim", rawFile(`{"a":{"dtype":"BF16","shape":[-2,2],"data_offsets":[0,8]}}`, 8), []error{ErrShape}},
		{"overflowing shape", rawFile(`{"a":{"dtype":"F64","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}`, 8), []error{ErrShape}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := readHeader(c.file)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("error %v does not wrap %v", err, w)
				}
			}
		})
	}
}

func TestSafetensorsErrorNamesTensor(t *testing.T) {
	_, err := readHeader(rawFile(`{"layers.7.mlp.gate.weight":{"dtype":"U8","shape":[16],"data_offsets":[0,16]}}`, 8))
	if err == nil || !strings.Contains(err.Error(), "layers.7.mlp.gate.weight") {
		t.Fatalf("error does not name the tensor: %v", err)
	}
}

func TestWriteSafetensorsRejectsWrongSize(t *testing.T) {
	err := WriteSafetensors(&bytes.Buffer{}, []TensorBlob{{Name: "a", DType: F32, Shape: []int64{2}, Data: make([]byte, 7)}}, nil)
	if !errors.Is(err, ErrShape) {
		t.Fatalf("got %v", err)
	}
	err = WriteSafetensors(&bytes.Buffer{}, []TensorBlob{{Name: "a", DType: "F4", Shape: []int64{2}}}, nil)
	if !errors.Is(err, ErrDType) {
		t.Fatalf("got %v", err)
	}
}

func TestParseSafetensorsIndex(t *testing.T) {
	idx, err := ParseSafetensorsIndex([]byte(`{"metadata":{"total_size":10},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s := idx.Shards(); len(s) != 2 || s[0] != "model-00001-of-00002.safetensors" {
		t.Errorf("shards %v", s)
	}
	for _, bad := range []string{`{}`, `[]`, `{"weight_map":{}}`, `{"weight_map":{"a":"../x.safetensors"}}`, `{"weight_map":{"a":"/etc/passwd"}}`, `{"weight_map":{"a":""}}`} {
		if _, err := ParseSafetensorsIndex([]byte(bad)); !errors.Is(err, ErrIndex) {
			t.Errorf("%s: got %v", bad, err)
		}
	}
}

func FuzzReadSafetensorsHeader(f *testing.F) {
	var buf bytes.Buffer
	_ = WriteSafetensors(&buf, []TensorBlob{
		{Name: "w", DType: U32, Shape: []int64{2, 2}, Data: make([]byte, 16)},
		{Name: "s", DType: BF16, Shape: []int64{2, 1}, Data: make([]byte, 4)},
	}, map[string]string{"format": "mlx"})
	f.Add(buf.Bytes())
	f.Add(rawFile(`{"a":{"dtype":"F8_E4M3","shape":[3],"data_offsets":[0,3]}}`, 3))
	f.Add(rawFile(`{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}`, 8))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readHeader(b)
		if err != nil {
			return
		}
		end := h.DataOffset
		for _, ti := range h.Tensors {
			if ti.Offset < end || ti.Offset+ti.Size > int64(len(b)) {
				t.Fatalf("tensor %q [%d,+%d) overlaps or escapes (prev end %d, file %d)", ti.Name, ti.Offset, ti.Size, end, len(b))
			}
			if sz, err := ByteSize(ti.DType, ti.Shape); err != nil || sz != ti.Size {
				t.Fatalf("tensor %q size %d vs shape %v", ti.Name, ti.Size, ti.Shape)
			}
			end = ti.Offset + ti.Size
		}
	})
}

// TestSafetensorsCorruption truncates a valid file at every length and flips
// every header byte: the reader must never panic, must reject every
// truncation (the data area shrinks below the last tensor), and anything it
// accepts after a flip must still describe tensors inside the file.
func TestSafetensorsCorruption(t *testing.T) {
	var buf bytes.Buffer
	err := WriteSafetensors(&buf, []TensorBlob{
		{Name: "w", DType: U32, Shape: []int64{2, 2}, Data: make([]byte, 16)},
		{Name: "s", DType: BF16, Shape: []int64{2, 1}, Data: make([]byte, 4)},
	}, map[string]string{"format": "mlx"})
	if err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	for n := 0; n < len(good); n++ {
		if _, err := readHeader(good[:n]); err == nil {
			t.Errorf("truncation to %d of %d bytes accepted", n, len(good))
		}
	}
	h, _ := readHeader(good)
	for i := 0; i < int(h.DataOffset); i++ {
		for _, x := range []byte{0x01, 0x20, 0x80, 0xff} {
			b := bytes.Clone(good)
			b[i] ^= x
			got, err := readHeader(b)
			if err != nil {
				if !errors.Is(err, ErrHeader) && !errors.Is(err, ErrDType) && !errors.Is(err, ErrOffsets) && !errors.Is(err, ErrShape) {
					t.Fatalf("flip %d^%#x: unclassified error %v", i, x, err)
				}
				continue
			}
			for _, ti := range got.Tensors {
				if ti.Offset < got.DataOffset || ti.Offset+ti.Size > int64(len(b)) {
					t.Fatalf("flip %d^%#x: tensor %q escapes the file", i, x, ti.Name)
				}
			}
		}
	}
}
