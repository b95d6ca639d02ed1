package runtime

import (
	"fmt"
	"math"
	"strings"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/quant"
)

// loader turns manifest tensors into backend weights.
type loader struct {
	man  *formats.Manifest
	data []byte
	be   Backend
	cfg  *formats.Config
}

// lookup finds a tensor by its short name, also under the "language_model."
// prefix flash-moe's extractor strips.
func (l *loader) lookup(name string) (string, formats.ManifestTensor, bool) {
	for _, n := range []string{name, "language_model." + name} {
		if t, ok := l.man.Tensors[n]; ok {
			return n, t, true
		}
	}
	return name, formats.ManifestTensor{}, false
}

func (l *loader) has(name string) bool { _, _, ok := l.lookup(name); return ok }

func (l *loader) bytes(name string, t formats.ManifestTensor) ([]byte, error) {
	if t.Offset < 0 || t.Offset+t.Size > int64(len(l.data)) {
		return nil, fmt.Errorf("%w: tensor %s [%d,+%d) outside %s (%d bytes)", ErrModel, name, t.Offset, t.Size, WeightsBin, len(l.data))
	}
	return l.data[t.Offset : t.Offset+t.Size], nil
}

// matrix loads module base ("model.layers.0.mlp.gate") as an [out, in]
// weight: quantized when base.scales exists (bits = packed_cols·32/in,
// group = in/scales_cols), else dense from base.weight.
func (l *loader) matrix(base string, out, in int) (Weight, error) {
	wn, wt, ok := l.lookup(base + ".weight")
	if !ok {
		return nil, fmt.Errorf("%w: tensor %s.weight missing from %s", ErrModel, base, WeightsJSON)
	}
	sn, st, quantized := l.lookup(base + ".scales")
	if !quantized {
		return l.denseFrom(wn, wt, out, in)
	}
	bn, bt, ok := l.lookup(base + ".biases")
	if !ok {
		return nil, fmt.Errorf("%w: %s has scales but no biases", ErrModel, base)
	}
	if wt.DType != "U32" || st.DType != "BF16" || bt.DType != "BF16" || len(wt.Shape) != 2 || len(st.Shape) != 2 ||
		!equalShape(st.Shape, bt.Shape) {
		return nil, fmt.Errorf("%w: quantized %s: weight %s%v, scales %s%v, biases %s%v (want U32 and BF16 2-D)",
			ErrModel, base, wt.DType, wt.Shape, st.DType, st.Shape, bt.DType, bt.Shape)
	}
	if wt.Shape[0] != int64(out) || st.Shape[0] != int64(out) || st.Shape[1] <= 0 || int64(in)%st.Shape[1] != 0 ||
		(wt.Shape[1]*32)%int64(in) != 0 {
		return nil, fmt.Errorf("%w: quantized %s: weight %v / scales %v do not fit [%d, %d] from the config",
			ErrModel, base, wt.Shape, st.Shape, out, in)
	}
	bits := int(wt.Shape[1] * 32 / int64(in))
	group := in / int(st.Shape[1])
	wb, err := l.bytes(wn, wt)
	if err != nil {
		return nil, err
	}
	sb, err := l.bytes(sn, st)
	if err != nil {
		return nil, err
	}
	bb, err := l.bytes(bn, bt)
	if err != nil {
		return nil, err
	}
	q, err := quant.FromBytes(bits, group, out, in, wb, sb, bb)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModel, base, err)
	}
	return l.load(&WeightData{Name: base, Out: out, In: in, Q: q})
}

// dense loads a float tensor with out·in elements as a dense [out, in] weight.
func (l *loader) dense(name string, out, in int) (Weight, error) {
	n, t, ok := l.lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w: tensor %s missing from %s", ErrModel, name, WeightsJSON)
	}
	return l.denseFrom(n, t, out, in)
}

// vector loads a 1-D float tensor of n elements (Out 1, In n).
func (l *loader) vector(name string, n int) (Weight, error) { return l.dense(name, 1, n) }

func (l *loader) denseFrom(name string, t formats.ManifestTensor, out, in int) (Weight, error) {
	var n int64 = 1
	for _, d := range t.Shape {
		n *= d
	}
	if n != int64(out)*int64(in) {
		return nil, fmt.Errorf("%w: tensor %s has shape %v, the config needs %d×%d elements", ErrModel, name, t.Shape, out, in)
	}
	b, err := l.bytes(name, t)
	if err != nil {
		return nil, err
	}
	f := make([]float32, n)
	switch t.DType {
	case "F32":
		copy(f, quant.F32s(b))
	case "BF16":
		for i, v := range quant.U16s(b) {
			f[i] = quant.BF16ToF32(v)
		}
	case "F16":
		for i, v := range quant.U16s(b) {
			f[i] = f16ToF32(v)
		}
	default:
		return nil, fmt.Errorf("%w: tensor %s has dtype %s, want F32, BF16 or F16", ErrModel, name, t.DType)
	}
	return l.load(&WeightData{Name: strings.TrimSuffix(name, ".weight"), Out: out, In: in, F: f})
}

func (l *loader) load(w *WeightData) (Weight, error) {
	rw, err := l.be.LoadWeight(w)
	if err != nil {
		return nil, fmt.Errorf("loading %s into the %s backend: %w", w.Name, l.be.Name(), err)
	}
	return rw, nil
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// f16ToF32 widens an IEEE half-precision bit pattern.
func f16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := int(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		return math.Float32frombits(sign) + float32(math.Ldexp(float64(mant), -24))*sgn(sign)
	}
	return math.Float32frombits(sign | uint32(exp-15+127)<<23 | mant<<13)
}

func sgn(sign uint32) float32 {
	if sign != 0 {
		return -1
	}
	return 1
}
