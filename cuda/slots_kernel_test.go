package cuda

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// moeSlotsRef is moe_slots' layout built on the host: slots in expert order,
// an expert's pairs ascending, cap pairs per slot.
func moeSlotsRef(ids []int32, E, cap int) []int32 {
	out := []int32{0}
	for e := 0; e < E; e++ {
		var ps []int32
		for p, id := range ids {
			if int(id) == e {
				ps = append(ps, int32(p))
			}
		}
		for j := 0; j < len(ps); j += cap {
			n := min(cap, len(ps)-j)
			slot := make([]int32, 34)
			slot[0], slot[1] = int32(e), int32(n)
			copy(slot[2:], ps[j:j+n])
			out = append(out, slot...)
			out[0]++
		}
	}
	return out
}

// TestMoESlots runs moe_slots alone at the real model's expert count (512,
// K=10, 128 tokens: 16 chunks of 32 experts for warp 0's scan) and at
// smaller ones, uniform and concentrated routing, against moeSlotsRef.
func TestMoESlots(t *testing.T) {
	b := openOrSkip(t, Options{})
	defer b.Close()
	r := rand.New(rand.NewPCG(31, 32))
	for _, tc := range []struct{ E, np, cap, hot int }{
		{512, 1280, 8, 0}, {512, 1280, 32, 0}, {512, 1280, 16, 3}, {32, 512, 32, 0}, {33, 77, 8, 2}, {8, 3, 8, 0},
	} {
		t.Run(fmt.Sprintf("E%d_pairs%d_cap%d_hot%d", tc.E, tc.np, tc.cap, tc.hot), func(t *testing.T) {
			ids := make([]int32, tc.np)
			for i := range ids {
				if tc.hot > 0 && r.IntN(2) == 0 {
					ids[i] = int32(r.IntN(tc.hot)) // a few experts take half the pairs
				} else {
					ids[i] = int32(r.IntN(tc.E))
				}
			}
			want := moeSlotsRef(ids, tc.E, tc.cap)
			got := make([]int32, 1+tc.np*34)
			err := b.run(func() error {
				dids, err := b.scratchBuf("test_slot_ids", tc.np*4)
				if err != nil {
					return err
				}
				slots, err := b.scratchBuf("test_slots", len(got)*4)
				if err != nil {
					return err
				}
				if err := b.d.htod(dids, unsafe.Pointer(&ids[0]), tc.np*4); err != nil {
					return err
				}
				if err := b.d.launch(b.fn["moe_slots"], grid1(1), [3]int{256, 1, 1}, 2*tc.E*4, dids, tc.np, tc.E, tc.cap, slots); err != nil {
					return err
				}
				return b.d.dtoh(unsafe.Pointer(&got[0]), slots, len(got)*4)
			})
			if err != nil {
				t.Fatal(err)
			}
			n := int(want[0])
			if got[0] != want[0] {
				t.Fatalf("%d slots, want %d", got[0], want[0])
			}
			for s := 0; s < n; s++ {
				g, w := got[1+s*34:1+s*34+2+int(want[1+s*34+1])], want[1+s*34:1+s*34+2+int(want[1+s*34+1])]
				if !slices.Equal(g, w) {
					t.Fatalf("slot %d: %v, want %v", s, g, w)
				}
			}
		})
	}
}
