package formats

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// vocab.bin, the id -> text table flash-moe's infer.m prints tokens with,
// as metal_infer/export_vocab.py (commit 239ff32) writes it. Little-endian:
//
//	u32 num_entries (= max id + 1 over model.vocab ∪ added_tokens), u32 max_id
//	num_entries × (u16 len, len bytes)   // id order; len 0 = no token
//
// Each token is stored byte-decoded: every character of the byte-level BPE
// alphabet is replaced by the byte it stands for ("Ġthe" -> " the"), any
// other character by its UTF-8 bytes. Added tokens go through the same
// mapping. A stored token may be an incomplete UTF-8 sequence.

// byteLevelRunes maps a byte to its character in GPT-2's byte-level
// alphabet: bytes 0x21–0x7E, 0xA1–0xAC and 0xAE–0xFF stand for themselves;
// the other 68 map, in increasing order, to U+0100, U+0101, ….
var byteLevelRunes, byteLevelBytes = func() (enc [256]rune, dec map[rune]byte) {
	dec = make(map[rune]byte, 256)
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			enc[b] = rune(b)
		} else {
			enc[b] = 0x100 + n
			n++
		}
		dec[enc[b]] = byte(b)
	}
	return enc, dec
}()

// ByteLevelRune returns the byte-level BPE character that stands for b.
func ByteLevelRune(b byte) rune { return byteLevelRunes[b] }

// ByteLevelByte returns the byte that the byte-level BPE character r stands
// for, and false when r is not in the alphabet.
func ByteLevelByte(r rune) (byte, bool) {
	b, ok := byteLevelBytes[r]
	return b, ok
}

// ByteLevelDecode maps a byte-level BPE string to raw bytes the way
// export_vocab.py does: characters of the alphabet become their byte, any
// other character its UTF-8 encoding.
func ByteLevelDecode(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if b, ok := byteLevelBytes[r]; ok {
			out = append(out, b)
		} else {
			out = append(out, string(r)...)
		}
	}
	return out
}

// VocabEntries returns the vocab.bin table of t: entry id holds the
// byte-decoded text of the token with that id (vocabulary or added token),
// nil for unused ids. Errors wrap ErrTokenizerJSON.
func VocabEntries(t *TokenizerJSON) ([][]byte, error) {
	if err := t.validate(); err != nil {
		return nil, err
	}
	maxID := -1
	for _, id := range t.Vocab {
		maxID = max(maxID, id)
	}
	for _, a := range t.Added {
		maxID = max(maxID, a.ID)
	}
	if maxID < 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrTokenizerJSON)
	}
	entries := make([][]byte, maxID+1)
	for s, id := range t.Vocab {
		entries[id] = ByteLevelDecode(s)
	}
	for _, a := range t.Added {
		entries[a.ID] = ByteLevelDecode(a.Content)
	}
	for id, e := range entries {
		if len(e) > maxTokenLen {
			return nil, fmt.Errorf("%w: token id %d: %d bytes exceed a u16 length", ErrTokenizerJSON, id, len(e))
		}
	}
	return entries, nil
}

// WriteVocabBin writes t as vocab.bin, byte-identical to export_vocab.py.
// Errors wrap ErrTokenizerJSON when t cannot be represented.
func WriteVocabBin(w io.Writer, t *TokenizerJSON) error {
	entries, err := VocabEntries(t)
	if err != nil {
		return err
	}
	return writeVocabEntries(w, entries)
}

func writeVocabEntries(w io.Writer, entries [][]byte) error {
	if len(entries) == 0 || len(entries) > MaxTokenID+1 {
		return fmt.Errorf("%w: %d entries", ErrTokenizerJSON, len(entries))
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var b [8]byte
	binary.LittleEndian.PutUint32(b[:], uint32(len(entries)))
	binary.LittleEndian.PutUint32(b[4:], uint32(len(entries)-1))
	bw.Write(b[:])
	for id, e := range entries {
		if len(e) > maxTokenLen {
			return fmt.Errorf("%w: token id %d: %d bytes exceed a u16 length", ErrTokenizerJSON, id, len(e))
		}
		binary.LittleEndian.PutUint16(b[:], uint16(len(e)))
		bw.Write(b[:2])
		bw.Write(e)
	}
	return bw.Flush()
}

// ReadVocabBin reads vocab.bin: entry id holds the token's bytes, nil for an
// unused id (length 0). It is strict: num_entries in [1, MaxTokenID+1],
// max_id = num_entries-1 (as export_vocab.py writes it), no data after the
// last entry. Errors wrap ErrVocabBin (and io.ErrUnexpectedEOF when the file
// is truncated).
func ReadVocabBin(r io.Reader) ([][]byte, error) {
	br := &binReader{r: bufio.NewReaderSize(r, 1<<16), sentinel: ErrVocabBin}
	n := br.u32("header")
	maxID := br.u32("header")
	if br.err != nil {
		return nil, br.err
	}
	if n == 0 || n > MaxTokenID+1 {
		return nil, fmt.Errorf("%w: num_entries %d outside [1, %d]", ErrVocabBin, n, MaxTokenID+1)
	}
	if maxID != n-1 {
		return nil, fmt.Errorf("%w: max_id %d with num_entries %d (want num_entries-1)", ErrVocabBin, maxID, n)
	}
	entries := make([][]byte, 0, min(n, 1<<16))
	for i := uint32(0); i < n; i++ {
		l := br.u16("entry")
		var e []byte
		if l > 0 {
			e = append([]byte(nil), br.bytes(l, "entry")...)
		}
		if br.err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, br.err)
		}
		entries = append(entries, e)
	}
	if err := br.expectEOF(); err != nil {
		return nil, err
	}
	return entries, nil
}
