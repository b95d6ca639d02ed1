package cuda

import (
	"container/list"
)

type expertKey struct{ layer, expert int }

// slotLRU maps experts to numbered slots with least-recently-used eviction.
type slotLRU struct {
	n     int
	owner []expertKey
	where map[expertKey]int
	lru   *list.List // front = most recent; values are slot numbers
	elems []*list.Element
	free  []int // never-used slots
}

func newSlotLRU(n int) *slotLRU {
	s := &slotLRU{n: n, owner: make([]expertKey, n), where: map[expertKey]int{}, lru: list.New(), elems: make([]*list.Element, n)}
	for i := n - 1; i >= 0; i-- {
		s.free = append(s.free, i)
	}
	return s
}

func (s *slotLRU) touch(slot int) { s.lru.MoveToFront(s.elems[slot]) }

// gpuPolicy is the GPU cache's slot replacement: LRU (FMOE_CUDA_CACHE=lru,
// Options.LRUCache) or freqSlots (default).
type gpuPolicy interface {
	size() int
	resident() int
	freeSlots() int
	lookup(k expertKey) (slot int, ok bool)
	use(k expertKey)
	advance(tokens float64)
	touch(slot int)
	take(protect func(expertKey) bool) (slot int, evicted expertKey, didEvict, ok bool)
	put(slot int, k expertKey)
	// putLast records k resident as the next to be evicted: an expert a
	// prefill step loads is not used again before the next step, so it
	// must not push out the experts decoding keeps using (a prefill step
	// sweeps every layer's experts once, a scan).
	putLast(slot int, k expertKey)
}

func (s *slotLRU) size() int                        { return s.n }
func (s *slotLRU) resident() int                    { return len(s.where) }
func (s *slotLRU) freeSlots() int                   { return len(s.free) }
func (s *slotLRU) lookup(k expertKey) (int, bool)   { sl, ok := s.where[k]; return sl, ok }
func (s *slotLRU) use(expertKey)                    {}
func (s *slotLRU) advance(float64)                  {}
func (s *freqSlots) size() int                      { return s.n }
func (s *freqSlots) resident() int                  { return len(s.where) }
func (s *freqSlots) freeSlots() int                 { return len(s.free) }
func (s *freqSlots) lookup(k expertKey) (int, bool) { sl, ok := s.where[k]; return sl, ok }

// take returns a never-used slot, or evicts the least recently used expert
// that protect does not claim (ok false when every slot is protected).
func (s *slotLRU) take(protect func(expertKey) bool) (slot int, evicted expertKey, didEvict, ok bool) {
	if n := len(s.free); n > 0 {
		slot = s.free[n-1]
		s.free = s.free[:n-1]
		return slot, expertKey{}, false, true
	}
	for e := s.lru.Back(); e != nil; e = e.Prev() {
		slot = e.Value.(int)
		k := s.owner[slot]
		if protect != nil && protect(k) {
			continue
		}
		s.lru.Remove(e)
		delete(s.where, k)
		return slot, k, true, true
	}
	return 0, expertKey{}, false, false
}

func (s *slotLRU) put(slot int, k expertKey) {
	s.owner[slot] = k
	s.where[k] = slot
	s.elems[slot] = s.lru.PushFront(slot)
}

func (s *slotLRU) putLast(slot int, k expertKey) {
	s.owner[slot] = k
	s.where[k] = slot
	s.elems[slot] = s.lru.PushBack(slot)
}
