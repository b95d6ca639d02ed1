package cuda

import (
	"container/heap"
	"container/list"
	"math"
)

// freqSlots is the GPU expert cache's replacement policy: a segmented cache
// that does not thrash when the experts a token uses exceed the slots.
//
// Plain LRU fails when a decode step's distinct experts (layers × K) exceed
// the cache: every expert is evicted before the next token needs it again and
// the hit rate drops to zero (K=10, 60 layers, a 25% cache of 32 experts per
// layer: 600 experts per token cycling through 480 slots). Here the slots are
// split into a protected segment (all but a probation share) ordered by an
// exponentially decayed use count (LFU with aging: recent and frequent experts
// score high) and a small probation segment with LRU order. A missing expert
// always gets a slot (kernels read it from there) in the probation segment;
// it replaces the lowest-scored protected expert only when its score is
// higher by a margin, which then drops to probation. Under uniform routing the
// protected set stays put (hit rate ≈ protected share of all experts instead
// of 0); under skewed routing it converges to the popular experts, and recent
// use counts for more than old use (aging), so temporal reuse is kept.
// While a token's uses fit in the slots the policy is plain LRU (protCap 0),
// which keeps everything a token reuses; advance switches at token boundaries.
type freqSlots struct {
	n     int
	owner []expertKey
	where map[expertKey]int
	free  []int // never-used slots

	protCap int
	prot    slotHeap   // protected slots, lowest score first
	inProt  []int      // slot -> index in prot, -1 when in probation
	lru     *list.List // probation slots, front = most recent
	elems   []*list.Element
	score   map[expertKey]float64 // decayed use count, in units of growth^clock
	clock   float64               // tokens seen (MoE calls / layers)
	lnG     float64               // log of the per-token growth of a use's weight
	uses    int                   // uses since the clock last crossed a whole token
	segCap  int                   // protCap when segmented (protCap is 0 in LRU mode)
}

// cacheDecay is the factor by which a use's weight falls per token (the
// policy adds growth^clock per use instead of decaying every score).
var cacheDecay = 0.7

// cacheMargin: a probation expert replaces the lowest protected one when its
// score is higher by this factor (hysteresis: equal scores do not churn).
var cacheMargin = 1.5

func newFreqSlots(n int) *freqSlots {
	s := &freqSlots{n: n, owner: make([]expertKey, n), where: map[expertKey]int{}, inProt: make([]int, n),
		lru: list.New(), elems: make([]*list.Element, n), score: map[expertKey]float64{}, lnG: -math.Log(cacheDecay)}
	s.prot.s = s
	probation := max(int(float64(n)*cacheProbation), min(n, 32))
	s.segCap = max(0, n-probation)
	for i := n - 1; i >= 0; i-- {
		s.free = append(s.free, i)
		s.inProt[i] = -1
	}
	return s
}

// advance moves the clock by dt tokens (rescaling scores before they
// overflow). At each whole token it picks the mode from the uses of the last
// token: while they fit in the slots, plain LRU keeps everything a token
// reuses (protCap 0); when they do not, the protected segment is used.
func (s *freqSlots) advance(dt float64) {
	before := s.clock
	s.clock += dt
	if math.Floor(s.clock) != math.Floor(before) {
		s.setMode(s.uses > s.n)
		s.uses = 0
	}
	if s.clock*s.lnG > 600 {
		f := math.Exp(-s.clock * s.lnG)
		for k, v := range s.score {
			if v *= f; v < 1e-30 {
				delete(s.score, k)
			} else {
				s.score[k] = v
			}
		}
		s.clock = 0
		heap.Init(&s.prot)
	}
}

// use counts one use of k (hit or miss) before it is touched or placed.
func (s *freqSlots) use(k expertKey) {
	s.uses++
	s.score[k] += math.Exp(s.clock * s.lnG)
}

// setMode switches between the segmented policy and plain LRU.
func (s *freqSlots) setMode(segmented bool) {
	if segmented {
		s.protCap = s.segCap
		return
	}
	s.protCap = 0
	for s.prot.Len() > 0 {
		sl := heap.Pop(&s.prot).(int)
		s.elems[sl] = s.lru.PushBack(sl)
	}
}

// touch records a hit on slot.
func (s *freqSlots) touch(slot int) {
	if i := s.inProt[slot]; i >= 0 {
		heap.Fix(&s.prot, i)
		return
	}
	s.lru.MoveToFront(s.elems[slot])
	s.promote(slot)
}

// take returns a never-used slot, else the least recently used probation
// slot that protect does not claim, else the lowest-scored protected one
// (ok false when every slot is claimed).
func (s *freqSlots) take(protect func(expertKey) bool) (slot int, evicted expertKey, didEvict, ok bool) {
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
		s.elems[slot] = nil
		delete(s.where, k)
		return slot, k, true, true
	}
	best := -1
	for i, sl := range s.prot.slots {
		if protect != nil && protect(s.owner[sl]) {
			continue
		}
		if best < 0 || s.score[s.owner[sl]] < s.score[s.owner[s.prot.slots[best]]] {
			best = i
		}
	}
	if best < 0 {
		return 0, expertKey{}, false, false
	}
	slot = s.prot.slots[best]
	heap.Remove(&s.prot, best)
	k := s.owner[slot]
	delete(s.where, k)
	return slot, k, true, true
}

// put records k resident in slot (taken by take).
func (s *freqSlots) put(slot int, k expertKey) {
	s.owner[slot] = k
	s.where[k] = slot
	if s.prot.Len() < s.protCap {
		heap.Push(&s.prot, slot)
		return
	}
	s.elems[slot] = s.lru.PushFront(slot)
	s.promote(slot)
}

// putLast records k resident in slot at the eviction end of the probation
// segment, without promotion (gpuPolicy.putLast).
func (s *freqSlots) putLast(slot int, k expertKey) {
	s.owner[slot] = k
	s.where[k] = slot
	s.elems[slot] = s.lru.PushBack(slot)
}

// promote swaps probation slot with the lowest protected one when its
// expert's score is higher by cacheMargin.
func (s *freqSlots) promote(slot int) {
	if s.prot.Len() == 0 || s.inProt[slot] >= 0 {
		return
	}
	low := s.prot.slots[0]
	if s.score[s.owner[slot]] <= cacheMargin*s.score[s.owner[low]] {
		return
	}
	heap.Pop(&s.prot)
	s.elems[low] = s.lru.PushFront(low)
	s.lru.Remove(s.elems[slot])
	s.elems[slot] = nil
	heap.Push(&s.prot, slot)
}

// slotHeap is a min-heap of slots by their expert's score.
type slotHeap struct {
	s     *freqSlots
	slots []int
}

func (h *slotHeap) Len() int { return len(h.slots) }
func (h *slotHeap) Less(i, j int) bool {
	return h.s.score[h.s.owner[h.slots[i]]] < h.s.score[h.s.owner[h.slots[j]]]
}
func (h *slotHeap) Swap(i, j int) {
	h.slots[i], h.slots[j] = h.slots[j], h.slots[i]
	h.s.inProt[h.slots[i]], h.s.inProt[h.slots[j]] = i, j
}
func (h *slotHeap) Push(x any) {
	sl := x.(int)
	h.s.inProt[sl] = len(h.slots)
	h.slots = append(h.slots, sl)
}
func (h *slotHeap) Pop() any {
	n := len(h.slots) - 1
	sl := h.slots[n]
	h.slots = h.slots[:n]
	h.s.inProt[sl] = -1
	return sl
}

// cacheProbation is the probation segment's share of the slots.
var cacheProbation = 0.05
