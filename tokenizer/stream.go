package tokenizer

import "unicode/utf8"

// StreamDecoder turns ids into printable text one token at a time. A token
// may end in the middle of a UTF-8 sequence (Qwen splits many CJK characters
// and emoji over two or three tokens); the decoder holds such a tail back
// until the next token completes it, so what it returns, concatenated, is
// exactly Decode of all the ids. Not safe for concurrent use.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
}

// NewStreamDecoder returns a StreamDecoder over t.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Add appends the bytes of id and returns the text that is now complete
// (possibly "").
func (d *StreamDecoder) Add(id int) string {
	d.pending = append(d.pending, d.t.TokenBytes(id)...)
	n := len(d.pending) - incompleteTail(d.pending)
	if n == 0 {
		return ""
	}
	out := string(appendLossy(nil, d.pending[:n]))
	d.pending = append(d.pending[:0], d.pending[n:]...)
	return out
}

// Flush returns what is held back (an incomplete sequence becomes U+FFFD)
// and resets the decoder.
func (d *StreamDecoder) Flush() string {
	out := string(appendLossy(nil, d.pending))
	d.pending = d.pending[:0]
	return out
}

// seqLen returns the length of the UTF-8 sequence led by b and the range of
// its second byte; n = 0 for a byte that cannot start a sequence.
func seqLen(b byte) (n int, lo, hi byte) {
	switch {
	case b < 0x80:
		return 1, 0, 0
	case b >= 0xC2 && b <= 0xDF:
		return 2, 0x80, 0xBF
	case b == 0xE0:
		return 3, 0xA0, 0xBF
	case b == 0xED:
		return 3, 0x80, 0x9F
	case b >= 0xE1 && b <= 0xEF:
		return 3, 0x80, 0xBF
	case b == 0xF0:
		return 4, 0x90, 0xBF
	case b >= 0xF1 && b <= 0xF3:
		return 4, 0x80, 0xBF
	case b == 0xF4:
		return 4, 0x80, 0x8F
	}
	return 0, 0, 0
}

// scan returns the length of the valid sequence at the start of p (ok), or
// the length of its maximal invalid subpart (!ok, at least 1).
func scan(p []byte) (k int, ok bool) {
	n, lo, hi := seqLen(p[0])
	if n == 0 {
		return 1, false
	}
	k = 1
	for k < n && k < len(p) {
		c := p[k]
		if k == 1 && (c < lo || c > hi) || k > 1 && (c < 0x80 || c > 0xBF) {
			break
		}
		k++
	}
	return k, k == n
}

// incompleteTail returns how many bytes at the end of p are a sequence cut
// short by the end of p (0 to 3).
func incompleteTail(p []byte) int {
	for back := 1; back <= 3 && back <= len(p); back++ {
		i := len(p) - back
		if n, _, _ := seqLen(p[i]); n > 1 {
			k, ok := scan(p[i:])
			if !ok && i+k == len(p) && k < n {
				return back
			}
			return 0
		}
		if p[i] < 0x80 {
			return 0
		}
	}
	return 0
}

// appendLossy appends p to dst with every maximal invalid subpart replaced
// by U+FFFD, as Rust's String::from_utf8_lossy (and so HF's decoder) does.
func appendLossy(dst, p []byte) []byte {
	for len(p) > 0 {
		if p[0] < utf8.RuneSelf {
			dst = append(dst, p[0])
			p = p[1:]
			continue
		}
		k, ok := scan(p)
		if ok {
			dst = append(dst, p[:k]...)
		} else {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		}
		p = p[k:]
	}
	return dst
}
