package runtime

import (
	"fmt"

	"github.com/fmoe/fmoe/quant"
)

// PackedExpertLayout returns the layout of one expert packed the flash-moe
// way: gate, up, down projections, each as weight, scales, biases, contiguous
// in that order with no padding (gate/up [intermediate, hidden], down
// [hidden, intermediate]). It is what the conformance suite and the
// in-memory sources use; the engine builds its layout from layout.json.
func PackedExpertLayout(hidden, intermediate, bits, group int) (ExpertLayout, error) {
	l := ExpertLayout{Hidden: hidden, Intermediate: intermediate, GroupSize: group}
	var off int64
	proj := func(out, in int) (ProjLayout, error) {
		if in%group != 0 || group%(32/bits) != 0 || (bits != 2 && bits != 4 && bits != 8) {
			return ProjLayout{}, fmt.Errorf("runtime: expert projection %dx%d cannot use %d-bit group %d", out, in, bits, group)
		}
		w, s, b := quant.ByteSizes(bits, group, out, in)
		p := ProjLayout{Bits: bits, Out: out, In: in,
			WOffset: off, SOffset: off + int64(w), BOffset: off + int64(w) + int64(s),
			WSize: int64(w), SSize: int64(s), BSize: int64(b)}
		off += int64(w + s + b)
		return p, nil
	}
	var err error
	if l.Gate, err = proj(intermediate, hidden); err != nil {
		return l, err
	}
	if l.Up, err = proj(intermediate, hidden); err != nil {
		return l, err
	}
	if l.Down, err = proj(hidden, intermediate); err != nil {
		return l, err
	}
	l.Size = off
	return l, nil
}

// Validate checks that every projection lies inside the expert and has the
// shapes an expert of this Hidden/Intermediate needs.
func (l ExpertLayout) Validate() error {
	check := func(name string, p ProjLayout, out, in int) error {
		if p.Out != out || p.In != in {
			return fmt.Errorf("runtime: expert %s is %dx%d, want %dx%d", name, p.Out, p.In, out, in)
		}
		w, s, b := quant.ByteSizes(p.Bits, l.GroupSize, p.Out, p.In)
		if p.WSize != int64(w) || p.SSize != int64(s) || p.BSize != int64(b) {
			return fmt.Errorf("runtime: expert %s sizes %d/%d/%d, want %d/%d/%d for %d-bit group %d",
				name, p.WSize, p.SSize, p.BSize, w, s, b, p.Bits, l.GroupSize)
		}
		for _, r := range [][2]int64{{p.WOffset, p.WSize}, {p.SOffset, p.SSize}, {p.BOffset, p.BSize}} {
			if r[0] < 0 || r[0]+r[1] > l.Size {
				return fmt.Errorf("runtime: expert %s component [%d,+%d) outside the %d-byte expert", name, r[0], r[1], l.Size)
			}
		}
		if p.WOffset%4 != 0 || p.SOffset%2 != 0 || p.BOffset%2 != 0 {
			return fmt.Errorf("runtime: expert %s components misaligned", name)
		}
		return nil
	}
	if l.Hidden <= 0 || l.Intermediate <= 0 || l.GroupSize <= 0 || l.Size <= 0 {
		return fmt.Errorf("runtime: bad expert layout %+v", l)
	}
	if err := check("gate_proj", l.Gate, l.Intermediate, l.Hidden); err != nil {
		return err
	}
	if err := check("up_proj", l.Up, l.Intermediate, l.Hidden); err != nil {
		return err
	}
	return check("down_proj", l.Down, l.Hidden, l.Intermediate)
}
