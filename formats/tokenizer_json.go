package formats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Sentinel errors of the tokenizer-file formats. Truncated input also wraps
// io.ErrUnexpectedEOF.
var (
	// ErrTokenizerJSON reports a malformed or inconsistent tokenizer.json, or
	// a TokenizerJSON value that cannot be written (ids out of range,
	// duplicate ids, a string longer than a u16 length field).
	ErrTokenizerJSON = errors.New("formats: bad tokenizer.json")
	// ErrTokenizerBin reports a malformed tokenizer.bin (BPET v1).
	ErrTokenizerBin = errors.New("formats: bad tokenizer.bin")
	// ErrVocabBin reports a malformed vocab.bin.
	ErrVocabBin = errors.New("formats: bad vocab.bin")
)

// Caps on tokenizer files. Real tokenizers are far below them (Qwen3.5:
// 248,077 ids, 247,587 merges, 33 added tokens).
const (
	MaxTokenID     = 1<<24 - 1 // largest token id accepted anywhere
	MaxMerges      = 1 << 24
	MaxAddedTokens = 1 << 20
	maxTokenLen    = 1<<16 - 1 // u16 length fields
)

// TokenizerJSON is the part of a Hugging Face tokenizer.json that a
// byte-level BPE tokenizer needs, or the content of a tokenizer.bin (whose
// format keeps only Vocab, Merges and Added; the pipeline fields are then
// zero).
type TokenizerJSON struct {
	Vocab  map[string]int // model.vocab: byte-level BPE string -> id, ids unique
	Merges [][2]string    // model.merges in rank order (index = rank)
	Added  []AddedToken   // added_tokens in file order

	ModelType               string // model.type ("BPE")
	UnkToken                string // model.unk_token ("" = none)
	ContinuingSubwordPrefix string // model.continuing_subword_prefix
	EndOfWordSuffix         string // model.end_of_word_suffix
	ByteFallback            bool   // model.byte_fallback
	IgnoreMerges            bool   // model.ignore_merges

	// Normalizers lists the normalizer types in application order, with
	// Sequence flattened ("NFC"); nil when the normalizer is null.
	Normalizers []string
	// PreTokenizers lists the pre-tokenizer steps in order, with Sequence
	// flattened; nil when the pre-tokenizer is null.
	PreTokenizers []PreTokenizerStep
	// Decoder is the decoder's type ("ByteLevel"); "" when null.
	Decoder string
}

// AddedToken is one entry of tokenizer.json's added_tokens.
type AddedToken struct {
	ID         int
	Content    string
	Special    bool
	Normalized bool
	LStrip     bool
	RStrip     bool
	SingleWord bool
}

// PreTokenizerStep is one pre-tokenizer of tokenizer.json.
type PreTokenizerStep struct {
	Type string // "Split", "ByteLevel", ...
	// Split: the pattern, its kind ("Regex" or "String"), behavior
	// ("Isolated", ...) and invert flag.
	Pattern     string
	PatternKind string
	Behavior    string
	Invert      bool
	// ByteLevel: add_prefix_space and use_regex (both default true in HF).
	AddPrefixSpace bool
	UseRegex       bool
}

// ParseTokenizerJSON parses tokenizer.json. Merges may be ["a","b"] pairs or
// "a b" strings (which, as in HF tokenizers, must hold exactly one space). Ids must be in
// [0, MaxTokenID]; vocabulary ids must be unique; an added token must agree
// with the vocabulary (same content with the same id, or neither present)
// and with the other added tokens. Errors wrap ErrTokenizerJSON.
func ParseTokenizerJSON(data []byte) (*TokenizerJSON, error) {
	var raw struct {
		AddedTokens []struct {
			ID         *int    `json:"id"`
			Content    *string `json:"content"`
			Special    bool    `json:"special"`
			Normalized bool    `json:"normalized"`
			LStrip     bool    `json:"lstrip"`
			RStrip     bool    `json:"rstrip"`
			SingleWord bool    `json:"single_word"`
		} `json:"added_tokens"`
		Normalizer   json.RawMessage `json:"normalizer"`
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
		Decoder      json.RawMessage `json:"decoder"`
		Model        *struct {
			Type                    string          `json:"type"`
			Vocab                   map[string]int  `json:"vocab"`
			Merges                  json.RawMessage `json:"merges"`
			UnkToken                *string         `json:"unk_token"`
			ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
			EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
			ByteFallback            bool            `json:"byte_fallback"`
			IgnoreMerges            bool            `json:"ignore_merges"`
			Dropout                 json.RawMessage `json:"dropout"`
		} `json:"model"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTokenizerJSON, err)
	}
	m := raw.Model
	if m == nil {
		return nil, fmt.Errorf("%w: no model", ErrTokenizerJSON)
	}
	if m.Vocab == nil {
		return nil, fmt.Errorf("%w: model has no vocab", ErrTokenizerJSON)
	}
	merges, err := parseMerges(m.Merges)
	if err != nil {
		return nil, fmt.Errorf("%w: model.merges: %w", ErrTokenizerJSON, err)
	}
	if len(raw.AddedTokens) > MaxAddedTokens {
		return nil, fmt.Errorf("%w: %d added tokens exceed the cap %d", ErrTokenizerJSON, len(raw.AddedTokens), MaxAddedTokens)
	}
	t := &TokenizerJSON{
		Vocab:        m.Vocab,
		Merges:       merges,
		ModelType:    m.Type,
		ByteFallback: m.ByteFallback,
		IgnoreMerges: m.IgnoreMerges,
	}
	if m.UnkToken != nil {
		t.UnkToken = *m.UnkToken
	}
	if m.ContinuingSubwordPrefix != nil {
		t.ContinuingSubwordPrefix = *m.ContinuingSubwordPrefix
	}
	if m.EndOfWordSuffix != nil {
		t.EndOfWordSuffix = *m.EndOfWordSuffix
	}
	for i, a := range raw.AddedTokens {
		if a.ID == nil || a.Content == nil {
			return nil, fmt.Errorf("%w: added_tokens[%d] lacks id or content", ErrTokenizerJSON, i)
		}
		t.Added = append(t.Added, AddedToken{ID: *a.ID, Content: *a.Content, Special: a.Special,
			Normalized: a.Normalized, LStrip: a.LStrip, RStrip: a.RStrip, SingleWord: a.SingleWord})
	}
	if err := t.validate(); err != nil {
		return nil, err
	}
	if t.Normalizers, err = parseNormalizer(raw.Normalizer, 0); err != nil {
		return nil, err
	}
	if t.PreTokenizers, err = parsePreTokenizer(raw.PreTokenizer, 0); err != nil {
		return nil, err
	}
	if t.Decoder, err = componentType(raw.Decoder, "decoder"); err != nil {
		return nil, err
	}
	return t, nil
}

// validate checks ids and the consistency of the vocabulary and the added
// tokens; errors wrap ErrTokenizerJSON.
func (t *TokenizerJSON) validate() error {
	if len(t.Vocab) > MaxTokenID+1 {
		return fmt.Errorf("%w: %d vocabulary entries exceed the cap", ErrTokenizerJSON, len(t.Vocab))
	}
	byID := make(map[int]string, len(t.Vocab)+len(t.Added))
	for s, id := range t.Vocab {
		if id < 0 || id > MaxTokenID {
			return fmt.Errorf("%w: token %q: id %d out of range [0, %d]", ErrTokenizerJSON, s, id, MaxTokenID)
		}
		if other, dup := byID[id]; dup {
			return fmt.Errorf("%w: tokens %q and %q share id %d", ErrTokenizerJSON, other, s, id)
		}
		byID[id] = s
	}
	addedByContent := make(map[string]int, len(t.Added))
	for _, a := range t.Added {
		if a.ID < 0 || a.ID > MaxTokenID {
			return fmt.Errorf("%w: added token %q: id %d out of range [0, %d]", ErrTokenizerJSON, a.Content, a.ID, MaxTokenID)
		}
		if id, ok := t.Vocab[a.Content]; ok && id != a.ID {
			return fmt.Errorf("%w: added token %q has id %d but the vocabulary gives it %d", ErrTokenizerJSON, a.Content, a.ID, id)
		}
		if s, ok := byID[a.ID]; ok && s != a.Content {
			return fmt.Errorf("%w: added token %q has id %d, which belongs to %q", ErrTokenizerJSON, a.Content, a.ID, s)
		}
		if id, ok := addedByContent[a.Content]; ok && id != a.ID {
			return fmt.Errorf("%w: added token %q listed with ids %d and %d", ErrTokenizerJSON, a.Content, id, a.ID)
		}
		byID[a.ID] = a.Content
		addedByContent[a.Content] = a.ID
	}
	return nil
}

// parseMerges decodes model.merges, an array of ["a","b"] pairs or of
// "a b" strings, without a reflection call per entry (a real tokenizer has
// ~250k). The input has already passed encoding/json's syntax check.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	p := &mergeParser{b: raw}
	if !p.eat('[') {
		return nil, errors.New("not an array")
	}
	var out [][2]string
	for !p.eat(']') {
		if len(out) > 0 && !p.eat(',') {
			return nil, fmt.Errorf("merge %d: expected ','", len(out))
		}
		if len(out) >= MaxMerges {
			return nil, fmt.Errorf("more than %d merges", MaxMerges)
		}
		var pair [2]string
		switch {
		case p.eat('['):
			n := 0
			for !p.eat(']') {
				if n > 0 && !p.eat(',') {
					return nil, fmt.Errorf("merge %d: expected ','", len(out))
				}
				s, err := p.str()
				if err != nil {
					return nil, fmt.Errorf("merge %d: %w", len(out), err)
				}
				if n < 2 {
					pair[n] = s
				}
				n++
			}
			if n != 2 {
				return nil, fmt.Errorf("merge %d has %d parts, want 2", len(out), n)
			}
		default:
			s, err := p.str()
			if err != nil {
				return nil, fmt.Errorf("merge %d: %w", len(out), err)
			}
			a, b, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(b, " ") {
				return nil, fmt.Errorf("merge %d (%q) is not two space-separated tokens", len(out), s)
			}
			pair = [2]string{a, b}
		}
		out = append(out, pair)
	}
	return out, nil
}

type mergeParser struct {
	b []byte
	i int
}

func (p *mergeParser) skipSpace() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

// eat consumes c (after white space) if it is next.
func (p *mergeParser) eat(c byte) bool {
	p.skipSpace()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str decodes a JSON string; plain ones are copied, ones with escapes or
// non-UTF-8 bytes go through encoding/json.
func (p *mergeParser) str() (string, error) {
	p.skipSpace()
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", errors.New("expected a string")
	}
	start, plain := p.i, true
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '\\':
			plain = false
			j++
		case c == '"':
			p.i = j + 1
			body := p.b[start+1 : j]
			if plain && utf8.Valid(body) {
				return string(body), nil
			}
			var s string
			err := json.Unmarshal(p.b[start:j+1], &s)
			return s, err
		case c < 0x20:
			return "", errors.New("control character in string")
		}
	}
	return "", errors.New("unterminated string")
}

const maxPipelineDepth = 8 // nesting of Sequence normalizers/pre-tokenizers

func isNull(b json.RawMessage) bool {
	b = bytes.TrimSpace(b)
	return len(b) == 0 || string(b) == "null"
}

func componentType(b json.RawMessage, what string) (string, error) {
	if isNull(b) {
		return "", nil
	}
	var c struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrTokenizerJSON, what, err)
	}
	if c.Type == "" {
		return "", fmt.Errorf("%w: %s has no type", ErrTokenizerJSON, what)
	}
	return c.Type, nil
}

func parseNormalizer(b json.RawMessage, depth int) ([]string, error) {
	typ, err := componentType(b, "normalizer")
	if err != nil || typ == "" {
		return nil, err
	}
	if typ != "Sequence" {
		return []string{typ}, nil
	}
	if depth >= maxPipelineDepth {
		return nil, fmt.Errorf("%w: normalizer Sequence nested too deeply", ErrTokenizerJSON)
	}
	var seq struct {
		Normalizers []json.RawMessage `json:"normalizers"`
	}
	if err := json.Unmarshal(b, &seq); err != nil {
		return nil, fmt.Errorf("%w: normalizer: %w", ErrTokenizerJSON, err)
	}
	out := []string{}
	for _, n := range seq.Normalizers {
		sub, err := parseNormalizer(n, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

func parsePreTokenizer(b json.RawMessage, depth int) ([]PreTokenizerStep, error) {
	typ, err := componentType(b, "pre_tokenizer")
	if err != nil || typ == "" {
		return nil, err
	}
	switch typ {
	case "Sequence":
		if depth >= maxPipelineDepth {
			return nil, fmt.Errorf("%w: pre_tokenizer Sequence nested too deeply", ErrTokenizerJSON)
		}
		var seq struct {
			PreTokenizers []json.RawMessage `json:"pretokenizers"`
		}
		if err := json.Unmarshal(b, &seq); err != nil {
			return nil, fmt.Errorf("%w: pre_tokenizer: %w", ErrTokenizerJSON, err)
		}
		out := []PreTokenizerStep{}
		for _, p := range seq.PreTokenizers {
			sub, err := parsePreTokenizer(p, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		}
		return out, nil
	case "Split":
		var s struct {
			Pattern  map[string]string `json:"pattern"`
			Behavior string            `json:"behavior"`
			Invert   bool              `json:"invert"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("%w: Split pre_tokenizer: %w", ErrTokenizerJSON, err)
		}
		step := PreTokenizerStep{Type: typ, Behavior: s.Behavior, Invert: s.Invert}
		if len(s.Pattern) != 1 {
			return nil, fmt.Errorf("%w: Split pre_tokenizer: pattern must be {\"Regex\": ...} or {\"String\": ...}", ErrTokenizerJSON)
		}
		for k, v := range s.Pattern {
			step.PatternKind, step.Pattern = k, v
		}
		return []PreTokenizerStep{step}, nil
	case "ByteLevel":
		var s struct {
			AddPrefixSpace *bool `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("%w: ByteLevel pre_tokenizer: %w", ErrTokenizerJSON, err)
		}
		step := PreTokenizerStep{Type: typ, AddPrefixSpace: true, UseRegex: true}
		if s.AddPrefixSpace != nil {
			step.AddPrefixSpace = *s.AddPrefixSpace
		}
		if s.UseRegex != nil {
			step.UseRegex = *s.UseRegex
		}
		return []PreTokenizerStep{step}, nil
	}
	return []PreTokenizerStep{{Type: typ}}, nil
}
