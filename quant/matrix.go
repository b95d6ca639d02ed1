package quant

import (
	"errors"
	"fmt"
	"unsafe"
)

// ErrLayout reports a packed matrix whose buffers do not match its shape.
var ErrLayout = errors.New("quant: inconsistent quantized layout")

// Matrix is an affine-quantized matrix in MLX layout (see the package doc).
// The slices usually alias bytes read from a file or a mapping.
type Matrix struct {
	Bits      int // 2, 4 or 8
	GroupSize int // columns per scale/bias group
	Rows      int // output features
	Cols      int // input features (logical, unpacked)
	W         []uint32
	Scales    []uint16 // bf16, Rows*Cols/GroupSize
	Biases    []uint16 // bf16, Rows*Cols/GroupSize
}

// WordsPerRow is the number of packed uint32 words in one row.
func (m *Matrix) WordsPerRow() int { return m.Cols * m.Bits / 32 }

// GroupsPerRow is the number of scale/bias groups in one row.
func (m *Matrix) GroupsPerRow() int { return m.Cols / m.GroupSize }

// ByteSizes returns the byte sizes of the weight, scales and biases buffers
// for a matrix of this shape.
func ByteSizes(bits, group, rows, cols int) (w, s, b int) {
	w = rows * cols * bits / 8
	s = rows * (cols / group) * 2
	return w, s, s
}

// Validate checks the shape parameters and buffer lengths.
func (m *Matrix) Validate() error {
	switch m.Bits {
	case 2, 4, 8:
	default:
		return fmt.Errorf("%w: bits %d not in {2,4,8}", ErrLayout, m.Bits)
	}
	if m.Rows <= 0 || m.Cols <= 0 || m.GroupSize <= 0 {
		return fmt.Errorf("%w: shape %dx%d group %d", ErrLayout, m.Rows, m.Cols, m.GroupSize)
	}
	if m.Cols%m.GroupSize != 0 || m.GroupSize%(32/m.Bits) != 0 {
		return fmt.Errorf("%w: %d columns not divisible into groups of %d (%d-bit)", ErrLayout, m.Cols, m.GroupSize, m.Bits)
	}
	if len(m.W) != m.Rows*m.WordsPerRow() {
		return fmt.Errorf("%w: %d weight words, want %d", ErrLayout, len(m.W), m.Rows*m.WordsPerRow())
	}
	g := m.Rows * m.GroupsPerRow()
	if len(m.Scales) != g || len(m.Biases) != g {
		return fmt.Errorf("%w: %d scales / %d biases, want %d", ErrLayout, len(m.Scales), len(m.Biases), g)
	}
	return nil
}

// FromBytes builds a Matrix that aliases little-endian byte buffers (no copy).
// The buffers must be 4-byte (w) and 2-byte (scales, biases) aligned, which
// holds for Go allocations, page-aligned mappings and 64-byte aligned files.
func FromBytes(bits, group, rows, cols int, w, scales, biases []byte) (*Matrix, error) {
	m := &Matrix{Bits: bits, GroupSize: group, Rows: rows, Cols: cols,
		W: U32s(w), Scales: U16s(scales), Biases: U16s(biases)}
	if len(w)%4 != 0 || len(scales)%2 != 0 || len(biases)%2 != 0 {
		return nil, fmt.Errorf("%w: buffer lengths %d/%d/%d not whole words", ErrLayout, len(w), len(scales), len(biases))
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// U32s reinterprets b as little-endian uint32 words (no copy; len(b)/4 words).
func U32s(b []byte) []uint32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// U16s reinterprets b as little-endian uint16 values (no copy).
func U16s(b []byte) []uint16 {
	if len(b) < 2 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// F32s reinterprets b as little-endian float32 values (no copy).
func F32s(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// Code returns the unsigned code of element (r, c).
func (m *Matrix) Code(r, c int) uint32 {
	per := 32 / m.Bits
	word := m.W[r*m.WordsPerRow()+c/per]
	return (word >> (uint(c%per) * uint(m.Bits))) & (1<<uint(m.Bits) - 1)
}

// DequantizeRow writes the float32 values of row r into dst[:Cols].
func (m *Matrix) DequantizeRow(dst []float32, r int) {
	gpr := m.GroupsPerRow()
	for c := 0; c < m.Cols; c++ {
		g := r*gpr + c/m.GroupSize
		dst[c] = float32(m.Code(r, c))*BF16ToF32(m.Scales[g]) + BF16ToF32(m.Biases[g])
	}
}

// U8sFromU32 reinterprets words as their little-endian bytes (no copy).
func U8sFromU32(w []uint32) []byte {
	if len(w) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4*len(w))
}
