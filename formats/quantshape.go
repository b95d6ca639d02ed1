package formats

import (
	"fmt"
	"slices"
)

// InferQuant derives the bits and group size of an MLX-quantized module
// from its tensor shapes: weight [..., out, in·bits/32] (U32) and scales
// [..., out, in/group]. The logical input dimension comes from inDim when
// known (e.g. hidden_size), else from groupHint × scales columns (the
// config's group size). The robust rule from the reference:
// bits = weight_cols·32/in, group = in/scales_cols. Errors wrap ErrShape.
func InferQuant(weight, scales []int64, inDim, groupHint int) (QuantSpec, error) {
	if len(weight) < 2 || len(weight) != len(scales) ||
		!slices.Equal(weight[:len(weight)-1], scales[:len(scales)-1]) {
		return QuantSpec{}, fmt.Errorf("%w: quantized weight %v and scales %v do not pair", ErrShape, weight, scales)
	}
	wc, sc := weight[len(weight)-1], scales[len(scales)-1]
	if wc <= 0 || sc <= 0 || wc > 1<<30 || sc > 1<<30 {
		return QuantSpec{}, fmt.Errorf("%w: quantized weight %v, scales %v", ErrShape, weight, scales)
	}
	in := int64(inDim)
	if in <= 0 {
		if groupHint <= 0 {
			return QuantSpec{}, fmt.Errorf("%w: neither the input dimension nor the group size is known for weight %v", ErrShape, weight)
		}
		in = sc * int64(groupHint)
	}
	if in%sc != 0 || (wc*32)%in != 0 {
		return QuantSpec{}, fmt.Errorf("%w: weight %v / scales %v do not fit input dimension %d", ErrShape, weight, scales, in)
	}
	s := QuantSpec{GroupSize: int(in / sc), Bits: int(wc * 32 / in)}
	switch s.Bits {
	case 2, 3, 4, 5, 6, 8:
	default:
		return QuantSpec{}, fmt.Errorf("%w: weight %v with input dimension %d implies %d bits", ErrShape, weight, in, s.Bits)
	}
	return s, nil
}
