package tokenizer

import (
	"fmt"
	"sync"

	"github.com/fmoe/fmoe/formats"
)

// merge is what a pair of adjacent token ids becomes.
type merge struct {
	rank int32 // index in merges: lower merges first
	id   int32 // the merged token
}

// bpe is the byte-level BPE model: vocabulary, merge ranks keyed by the pair
// of ids, and a cache of piece -> ids.
type bpe struct {
	vocab  map[string]int32
	tokens []string         // id -> byte-level string ("" for ids that are not vocabulary tokens)
	merges map[uint64]merge // pairKey(a, b) -> merge
	byteID [256]int32       // id of the single-character token of each byte, -1 if absent
	cache  sync.Map         // string -> []int32
	cached int64            // entries stored in cache (approximate cap)
	mu     sync.Mutex       // guards cached
}

const maxCacheEntries = 1 << 16

func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

func newBPE(t *formats.TokenizerJSON) (*bpe, error) {
	m := &bpe{vocab: make(map[string]int32, len(t.Vocab)), merges: make(map[uint64]merge, len(t.Merges))}
	maxID := -1
	for s, id := range t.Vocab {
		m.vocab[s] = int32(id)
		maxID = max(maxID, id)
	}
	m.tokens = make([]string, maxID+1)
	for s, id := range t.Vocab {
		m.tokens[id] = s
	}
	for b := 0; b < 256; b++ {
		id, ok := m.vocab[string(formats.ByteLevelRune(byte(b)))]
		if !ok {
			id = -1
		}
		m.byteID[b] = id
	}
	for rank, p := range t.Merges {
		a, okA := m.vocab[p[0]]
		b, okB := m.vocab[p[1]]
		c, okC := m.vocab[p[0]+p[1]]
		if !okA || !okB || !okC {
			return nil, fmt.Errorf("%w: merge %d (%q %q) uses or makes a token that is not in the vocabulary", ErrInvalid, rank, p[0], p[1])
		}
		m.merges[pairKey(a, b)] = merge{rank: int32(rank), id: c} // a repeated pair: the last one wins, as in HF
	}
	return m, nil
}

// encode appends the ids of one pre-tokenized piece (raw bytes, before the
// byte-level mapping) to dst.
func (m *bpe) encode(dst []int, piece string) []int {
	if v, ok := m.cache.Load(piece); ok {
		for _, id := range v.([]int32) {
			dst = append(dst, int(id))
		}
		return dst
	}
	ids := m.merge(piece)
	for _, id := range ids {
		dst = append(dst, int(id))
	}
	if len(piece) <= 256 {
		m.mu.Lock()
		if m.cached < maxCacheEntries {
			m.cached++
			m.mu.Unlock()
			m.cache.Store(piece, ids)
		} else {
			m.mu.Unlock()
		}
	}
	return dst
}

// symbol is one current token of a word being merged (a doubly linked list
// over a slice, as in HF's Word).
type symbol struct {
	id         int32
	prev, next int32 // indices, -1 at the ends
	dead       bool
}

// candidate is a possible merge at symbol pos; the heap pops the lowest
// rank, then the leftmost position.
type candidate struct {
	pos  int32
	rank int32
	id   int32
}

// candidates is a binary min-heap (typed, to avoid container/heap's
// interface calls on the hot path).
type candidates []candidate

func (c candidate) less(d candidate) bool {
	return c.rank < d.rank || c.rank == d.rank && c.pos < d.pos
}

func (h *candidates) init() {
	for i := len(*h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *candidates) push(c candidate) {
	*h = append(*h, c)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q[i].less(q[p]) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *candidates) pop() candidate {
	q := *h
	top := q[0]
	n := len(q) - 1
	q[0] = q[n]
	*h = q[:n]
	h.down(0)
	return top
}

func (h candidates) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r].less(h[l]) {
			m = r
		}
		if !h[m].less(h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// merge runs BPE on one piece: start from one symbol per byte (bytes whose
// character is not in the vocabulary are dropped, as HF does without an
// unk token), then repeatedly apply the lowest-ranked merge, leftmost first,
// until none applies. This is HF tokenizers' Word::merge_all.
func (m *bpe) merge(piece string) []int32 {
	syms := make([]symbol, 0, len(piece))
	for i := 0; i < len(piece); i++ {
		id := m.byteID[piece[i]]
		if id < 0 {
			continue
		}
		n := int32(len(syms))
		syms = append(syms, symbol{id: id, prev: n - 1, next: n + 1})
	}
	if len(syms) == 0 {
		return nil
	}
	syms[len(syms)-1].next = -1
	if len(syms) > 1 {
		var q candidates
		for i := 0; i+1 < len(syms); i++ {
			if mg, ok := m.merges[pairKey(syms[i].id, syms[i+1].id)]; ok {
				q = append(q, candidate{pos: int32(i), rank: mg.rank, id: mg.id})
			}
		}
		q.init()
		for len(q) > 0 {
			top := q.pop()
			s := &syms[top.pos]
			if s.dead || s.next < 0 {
				continue
			}
			right := &syms[s.next]
			if mg, ok := m.merges[pairKey(s.id, right.id)]; !ok || mg.id != top.id {
				continue // stale: one side changed since this candidate was queued
			}
			s.id = top.id
			right.dead = true
			s.next = right.next
			if s.next >= 0 {
				syms[s.next].prev = top.pos
			}
			if s.prev >= 0 {
				p := syms[s.prev]
				if mg, ok := m.merges[pairKey(p.id, s.id)]; ok {
					q.push(candidate{pos: s.prev, rank: mg.rank, id: mg.id})
				}
			}
			if s.next >= 0 {
				if mg, ok := m.merges[pairKey(s.id, syms[s.next].id)]; ok {
					q.push(candidate{pos: top.pos, rank: mg.rank, id: mg.id})
				}
			}
		}
	}
	out := make([]int32, 0, len(syms))
	for i := int32(0); i >= 0; i = syms[i].next {
		out = append(out, syms[i].id)
	}
	return out
}

// tokenString returns the byte-level string of a vocabulary id.
func (m *bpe) tokenString(id int) (string, bool) {
	if id < 0 || id >= len(m.tokens) || m.tokens[id] == "" {
		return "", false
	}
	return m.tokens[id], true
}

// byteLevelBytes maps a token string to bytes the way HF's ByteLevel
// decoder does: when every character is in the byte-level alphabet, the
// bytes they stand for; otherwise the string's own UTF-8 bytes.
func byteLevelBytes(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := formats.ByteLevelByte(r)
		if !ok {
			return []byte(s)
		}
		out = append(out, b)
	}
	return out
}
