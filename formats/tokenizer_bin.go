package formats

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"
)

// tokenizer.bin ("BPET" v1), the file flash-moe's tokenizer.h reads and
// metal_infer/export_tokenizer.py writes. All integers little-endian:
//
//	header   "BPET", u32 version = 1, u32 vocab_count, u32 merge_count, u32 added_count
//	vocab    vocab_count × (u32 id, u16 len, len bytes), sorted by id; the
//	         byte-level BPE strings of model.vocab (not byte-decoded, no added tokens)
//	merges   merge_count × (u16 len_a, a, u16 len_b, b), in rank order
//	added    added_count × (u32 id, u16 len, content), in tokenizer.json order
const (
	tokenizerBinMagic   = "BPET"
	tokenizerBinVersion = 1
)

// WriteTokenizerBin writes t as tokenizer.bin, byte-identical to
// export_tokenizer.py for tokenizer.json files whose merges are ["a","b"]
// pairs. (For "a b" string merges the script writes the first two
// characters of each string; fmoe writes the two tokens, which is what the
// format means.) Errors wrap ErrTokenizerJSON when t cannot be represented.
func WriteTokenizerBin(w io.Writer, t *TokenizerJSON) error {
	if err := t.validate(); err != nil {
		return err
	}
	if len(t.Merges) > MaxMerges || len(t.Added) > MaxAddedTokens {
		return fmt.Errorf("%w: too many merges or added tokens", ErrTokenizerJSON)
	}
	type entry struct {
		s  string
		id int
	}
	vocab := make([]entry, 0, len(t.Vocab))
	for s, id := range t.Vocab {
		vocab = append(vocab, entry{s, id})
	}
	sort.Slice(vocab, func(i, j int) bool { return vocab[i].id < vocab[j].id })

	bw := bufio.NewWriterSize(w, 1<<16)
	var hdr [20]byte
	copy(hdr[:], tokenizerBinMagic)
	binary.LittleEndian.PutUint32(hdr[4:], tokenizerBinVersion)
	binary.LittleEndian.PutUint32(hdr[8:], uint32(len(vocab)))
	binary.LittleEndian.PutUint32(hdr[12:], uint32(len(t.Merges)))
	binary.LittleEndian.PutUint32(hdr[16:], uint32(len(t.Added)))
	bw.Write(hdr[:])
	for _, e := range vocab {
		if err := putIDString(bw, e.id, e.s); err != nil {
			return err
		}
	}
	for rank, m := range t.Merges {
		for _, s := range m {
			if len(s) > maxTokenLen {
				return fmt.Errorf("%w: merge %d: part of %d bytes exceeds a u16 length", ErrTokenizerJSON, rank, len(s))
			}
			var l [2]byte
			binary.LittleEndian.PutUint16(l[:], uint16(len(s)))
			bw.Write(l[:])
			bw.WriteString(s)
		}
	}
	for _, a := range t.Added {
		if err := putIDString(bw, a.ID, a.Content); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func putIDString(bw *bufio.Writer, id int, s string) error {
	if len(s) > maxTokenLen {
		return fmt.Errorf("%w: token id %d: %d bytes exceed a u16 length", ErrTokenizerJSON, id, len(s))
	}
	var b [6]byte
	binary.LittleEndian.PutUint32(b[:], uint32(id))
	binary.LittleEndian.PutUint16(b[4:], uint16(len(s)))
	bw.Write(b[:])
	_, err := bw.WriteString(s)
	return err
}

// ReadTokenizerBin reads tokenizer.bin. It is strict: the magic and version
// must match, counts are capped (MaxTokenID+1 vocabulary entries, MaxMerges,
// MaxAddedTokens), ids must be strictly increasing in the vocabulary section
// and in range, strings valid UTF-8, vocabulary strings unique, added tokens
// consistent with the vocabulary, and nothing may follow the last record. So
// a file it accepts is rewritten byte for byte by WriteTokenizerBin. The
// result has only Vocab, Merges and Added (Special false: the format does
// not record it). Errors wrap ErrTokenizerBin (and io.ErrUnexpectedEOF when
// the file is truncated).
func ReadTokenizerBin(r io.Reader) (*TokenizerJSON, error) {
	br := &binReader{r: bufio.NewReaderSize(r, 1<<16), sentinel: ErrTokenizerBin}
	hdr := br.bytes(20, "header")
	if br.err != nil {
		return nil, br.err
	}
	if string(hdr[:4]) != tokenizerBinMagic {
		return nil, fmt.Errorf("%w: magic %q, want %q", ErrTokenizerBin, hdr[:4], tokenizerBinMagic)
	}
	if v := binary.LittleEndian.Uint32(hdr[4:]); v != tokenizerBinVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrTokenizerBin, v, tokenizerBinVersion)
	}
	nVocab := binary.LittleEndian.Uint32(hdr[8:])
	nMerges := binary.LittleEndian.Uint32(hdr[12:])
	nAdded := binary.LittleEndian.Uint32(hdr[16:])
	if nVocab > MaxTokenID+1 || nMerges > MaxMerges || nAdded > MaxAddedTokens {
		return nil, fmt.Errorf("%w: counts %d/%d/%d (vocab/merges/added) exceed the caps", ErrTokenizerBin, nVocab, nMerges, nAdded)
	}
	t := &TokenizerJSON{
		Vocab:  make(map[string]int, min(nVocab, 1<<16)),
		Merges: make([][2]string, 0, min(nMerges, 1<<16)),
	}
	last := -1
	for i := uint32(0); i < nVocab; i++ {
		id, s := br.idString("vocabulary", i)
		if br.err != nil {
			return nil, br.err
		}
		if id <= last {
			return nil, fmt.Errorf("%w: vocabulary record %d: id %d not above the previous id %d", ErrTokenizerBin, i, id, last)
		}
		if prev, dup := t.Vocab[s]; dup {
			return nil, fmt.Errorf("%w: vocabulary record %d: token %q already has id %d", ErrTokenizerBin, i, s, prev)
		}
		last = id
		t.Vocab[s] = id
	}
	for i := uint32(0); i < nMerges; i++ {
		a := br.str("merge", i)
		b := br.str("merge", i)
		if br.err != nil {
			return nil, br.err
		}
		t.Merges = append(t.Merges, [2]string{a, b})
	}
	for i := uint32(0); i < nAdded; i++ {
		id, s := br.idString("added token", i)
		if br.err != nil {
			return nil, br.err
		}
		t.Added = append(t.Added, AddedToken{ID: id, Content: s})
	}
	if err := br.expectEOF(); err != nil {
		return nil, err
	}
	if err := t.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenizerBin, err)
	}
	return t, nil
}

// binReader reads little-endian records, keeping the first error.
type binReader struct {
	r        *bufio.Reader
	sentinel error
	err      error
	buf      [8]byte
}

func (b *binReader) fail(format string, args ...any) {
	if b.err == nil {
		b.err = fmt.Errorf("%w: "+format, append([]any{b.sentinel}, args...)...)
	}
}

func (b *binReader) bytes(n int, what string) []byte {
	if b.err != nil {
		return nil
	}
	var p []byte
	if n <= len(b.buf) {
		p = b.buf[:n]
	} else {
		p = make([]byte, n)
	}
	if _, err := io.ReadFull(b.r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		b.fail("%s: %w", what, err)
		return nil
	}
	return p
}

func (b *binReader) u16(what string) int {
	p := b.bytes(2, what)
	if p == nil {
		return 0
	}
	return int(binary.LittleEndian.Uint16(p))
}

func (b *binReader) u32(what string) uint32 {
	p := b.bytes(4, what)
	if p == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(p)
}

func (b *binReader) str(section string, i uint32) string {
	n := b.u16(section)
	p := b.bytes(n, section)
	if b.err != nil {
		return ""
	}
	if !utf8.Valid(p) {
		b.fail("%s record %d: string is not valid UTF-8", section, i)
		return ""
	}
	return string(p)
}

func (b *binReader) idString(section string, i uint32) (int, string) {
	id := b.u32(section)
	if b.err == nil && id > MaxTokenID {
		b.fail("%s record %d: id %d exceeds %d", section, i, id, MaxTokenID)
	}
	s := b.str(section, i)
	return int(id), s
}

func (b *binReader) expectEOF() error {
	if b.err != nil {
		return b.err
	}
	if _, err := b.r.ReadByte(); err == nil {
		return fmt.Errorf("%w: data after the last record", b.sentinel)
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %w", b.sentinel, err)
	}
	return nil
}
