package formats

import (
	"errors"
	"fmt"
	"math/bits"
)

// Sentinel errors. Every error returned by this package wraps one of these
// (and names the tensor, file section or field at fault) so callers can
// classify failures with errors.Is.
var (
	// ErrHeader reports a malformed safetensors header: bad length prefix,
	// length past the end of the file, oversized, not a JSON object,
	// duplicate keys, bad metadata.
	ErrHeader = errors.New("formats: bad safetensors header")
	// ErrDType reports an unknown or unsupported element type.
	ErrDType = errors.New("formats: unknown dtype")
	// ErrOffsets reports tensor data offsets that are inverted, outside the
	// data area, overlapping another tensor, or not matching the shape.
	ErrOffsets = errors.New("formats: bad tensor offsets")
	// ErrShape reports a shape that is negative, overflows, or whose byte
	// size does not match the data span or the expected dimensions.
	ErrShape = errors.New("formats: bad tensor shape")
	// ErrIndex reports a malformed model.safetensors.index.json.
	ErrIndex = errors.New("formats: bad safetensors index")
	// ErrConfig reports a missing, mistyped or inconsistent config.json field.
	ErrConfig = errors.New("formats: bad config")
	// ErrManifest reports a malformed model_weights.json manifest.
	ErrManifest = errors.New("formats: bad manifest")
	// ErrLayout reports an invalid packed-expert layout (layout.json or
	// dimensions that cannot be packed).
	ErrLayout = errors.New("formats: bad expert layout")
)

// DType is a safetensors element type name, spelled as in the header.
type DType string

// Known element types.
const (
	BF16   DType = "BF16"
	F16    DType = "F16"
	F32    DType = "F32"
	F64    DType = "F64"
	I8     DType = "I8"
	U8     DType = "U8"
	I16    DType = "I16"
	U16    DType = "U16"
	I32    DType = "I32"
	U32    DType = "U32"
	I64    DType = "I64"
	U64    DType = "U64"
	BOOL   DType = "BOOL"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
)

var dtypeSizes = map[DType]int{
	BF16: 2, F16: 2, F32: 4, F64: 8,
	I8: 1, U8: 1, I16: 2, U16: 2, I32: 4, U32: 4, I64: 8, U64: 8,
	BOOL: 1, F8E4M3: 1, F8E5M2: 1,
}

// Size returns the size of one element in bytes, or an error wrapping
// ErrDType for an unknown type.
func (d DType) Size() (int, error) {
	if n, ok := dtypeSizes[d]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("%w %q", ErrDType, string(d))
}

// Valid reports whether d is a known element type.
func (d DType) Valid() bool { _, ok := dtypeSizes[d]; return ok }

// NumElements returns the product of shape, checking for negative
// dimensions and int64 overflow (errors wrap ErrShape). An empty shape is a
// scalar with one element.
func NumElements(shape []int64) (int64, error) {
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension in %v", ErrShape, shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > 1<<62 {
			return 0, fmt.Errorf("%w: %v overflows", ErrShape, shape)
		}
		n = lo
	}
	return int64(n), nil
}

// ByteSize returns product(shape) × dtype size with overflow checks.
func ByteSize(d DType, shape []int64) (int64, error) {
	es, err := d.Size()
	if err != nil {
		return 0, err
	}
	n, err := NumElements(shape)
	if err != nil {
		return 0, err
	}
	if n > (1<<62)/int64(es) {
		return 0, fmt.Errorf("%w: %v of %s overflows", ErrShape, shape, d)
	}
	return n * int64(es), nil
}
