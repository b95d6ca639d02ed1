package requant

import (
	"fmt"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/quant"
)

// Projections of an expert, in file order.
var Projections = [3]string{"gate_proj", "up_proj", "down_proj"}

// projShape is where one projection lives inside an expert block.
type projShape struct {
	rows, cols int
	w, s, b    formats.ExpertComponent
}

// expertShape is an expert layout resolved into its three projections.
type expertShape struct {
	bits, group int
	size        int64
	proj        [3]projShape
}

func resolve(l *formats.ExpertLayout) (*expertShape, error) {
	e := &expertShape{bits: l.Bits, group: l.GroupSize, size: l.Size}
	for i, p := range Projections {
		var ps projShape
		var ok [3]bool
		ps.w, ok[0] = l.Component(p + ".weight")
		ps.s, ok[1] = l.Component(p + ".scales")
		ps.b, ok[2] = l.Component(p + ".biases")
		if !ok[0] || !ok[1] || !ok[2] {
			return nil, fmt.Errorf("%w: expert layout lacks %s components", ErrLayout, p)
		}
		ps.rows, ps.cols = l.Intermediate, l.Hidden
		if p == "down_proj" {
			ps.rows, ps.cols = l.Hidden, l.Intermediate
		}
		e.proj[i] = ps
	}
	return e, nil
}

func (e *expertShape) matrix(i int, blob []byte) (*quant.Matrix, error) {
	p := &e.proj[i]
	sl := func(c formats.ExpertComponent) []byte { return blob[c.Offset : c.Offset+c.Size] }
	m, err := quant.FromBytes(e.bits, e.group, p.rows, p.cols, sl(p.w), sl(p.s), sl(p.b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Projections[i], err)
	}
	return m, nil
}

// Expert requantizes one 4-bit expert block (layout in) into a 2-bit block
// (layout out, same dims and group size) and adds each projection's error to
// st (gate, up, down). Both layouts must come from formats.NewExpertLayout.
func Expert(out []byte, lout *formats.ExpertLayout, in []byte, lin *formats.ExpertLayout, m Method, st *[3]Stats) error {
	ein, eout, err := pair(lin, lout)
	if err != nil {
		return err
	}
	return expert(out, eout, in, ein, m, st)
}

func pair(lin, lout *formats.ExpertLayout) (ein, eout *expertShape, err error) {
	if lin.Bits != 4 {
		return nil, nil, fmt.Errorf("%w: %d-bit", ErrNot4Bit, lin.Bits)
	}
	if lout.Bits != 2 || lout.Hidden != lin.Hidden || lout.Intermediate != lin.Intermediate || lout.GroupSize != lin.GroupSize {
		return nil, nil, fmt.Errorf("%w: 2-bit layout does not match the 4-bit one", ErrShape)
	}
	if ein, err = resolve(lin); err != nil {
		return nil, nil, err
	}
	if eout, err = resolve(lout); err != nil {
		return nil, nil, err
	}
	return ein, eout, nil
}

func expert(out []byte, eout *expertShape, in []byte, ein *expertShape, m Method, st *[3]Stats) error {
	if int64(len(in)) != ein.size || int64(len(out)) != eout.size {
		return fmt.Errorf("%w: %d/%d bytes, want %d/%d", ErrSize, len(in), len(out), ein.size, eout.size)
	}
	for i := range Projections {
		src, err := ein.matrix(i, in)
		if err != nil {
			return err
		}
		dst, err := eout.matrix(i, out)
		if err != nil {
			return err
		}
		if err := Matrix(dst, src, m, &st[i]); err != nil {
			return fmt.Errorf("%s: %w", Projections[i], err)
		}
	}
	return nil
}

// measureExpert adds the error of an existing 2-bit block against its 4-bit
// source to st (used for outputs a re-run keeps).
func measureExpert(out []byte, eout *expertShape, in []byte, ein *expertShape, st *[3]Stats) error {
	for i := range Projections {
		src, err := ein.matrix(i, in)
		if err != nil {
			return err
		}
		dst, err := eout.matrix(i, out)
		if err != nil {
			return err
		}
		compare(dst, src, &st[i])
	}
	return nil
}

// compare adds the error of the 2-bit dst against the 4-bit src to st.
func compare(dst, src *quant.Matrix, st *Stats) {
	w4, w2 := src.GroupSize/8, src.GroupSize/16
	var g groupIn
	for i := range src.Scales {
		in := src.W[i*w4 : (i+1)*w4]
		g.levels(src.Scales[i], src.Biases[i], in)
		s, b := quant.BF16ToF32(dst.Scales[i]), quant.BF16ToF32(dst.Biases[i])
		var r [4]float64
		for j := range r {
			r[j] = float64(float32(float32(j)*s) + b)
		}
		var sum, mx float64
		for k, w := range dst.W[i*w2 : (i+1)*w2] {
			a := uint64(in[2*k]) | uint64(in[2*k+1])<<32
			for c := 0; c < 16; c++ {
				e := float64(g.v[a>>(4*c)&15]) - r[w>>(2*c)&3]
				e = max(e, -e)
				sum += e * e
				if e > mx || e != e {
					mx = e
				}
			}
		}
		st.SumSq += sum
		st.N += int64(src.GroupSize)
		if mx > st.MaxAbs || mx != mx {
			st.MaxAbs = mx
		}
	}
}
