package tokenizer

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/text/unicode/norm"

	"github.com/fmoe/fmoe/formats"
)

var (
	// ErrUnsupported reports a tokenizer.json that asks for something fmoe
	// does not implement (another model type, normalizer, pre-tokenizer,
	// split regex or added-token option).
	ErrUnsupported = errors.New("tokenizer: unsupported tokenizer")
	// ErrInvalid reports tokenizer data that is inconsistent (a merge whose
	// parts or result are not in the vocabulary).
	ErrInvalid = errors.New("tokenizer: invalid tokenizer")
	// ErrNotFound reports a model directory with neither tokenizer.json nor
	// tokenizer.bin; it also wraps fs.ErrNotExist.
	ErrNotFound = errors.New("tokenizer: no tokenizer.json or tokenizer.bin")
)

// Special-token contents fmoe knows by name.
const (
	ImStart    = "<|im_start|>"
	ImEnd      = "<|im_end|>"
	EndOfText  = "<|endoftext|>"
	ThinkOpen  = "<think>"
	ThinkClose = "</think>"
)

// Tokenizer is a byte-level BPE tokenizer. It is safe for concurrent use.
type Tokenizer struct {
	model        *bpe
	split        splitter
	nfc          bool
	ignoreMerges bool

	added     map[string]formats.AddedToken // content -> token
	addedByID map[int]formats.AddedToken
	byFirst   [256][]string // added-token contents by first byte, longest first
	tokBytes  [][]byte      // id -> decoded bytes (nil: no token)
}

// Load builds a tokenizer from the bytes of a tokenizer.json. It accepts the
// Qwen pipeline: BPE model, NFC or no normalizer, a Split pre-tokenizer with
// the Qwen3 or Qwen3.5 regex (behavior Isolated) followed by ByteLevel
// without prefix space or regex, ByteLevel (or no) decoder. Anything else
// is rejected with ErrUnsupported rather than approximated. Added tokens
// with normalized: true are matched in the raw text like the others (the
// same thing for contents that NFC leaves alone).
func Load(tokenizerJSON []byte) (*Tokenizer, error) {
	tj, err := formats.ParseTokenizerJSON(tokenizerJSON)
	if err != nil {
		return nil, err
	}
	if tj.ModelType != "BPE" {
		return nil, fmt.Errorf("%w: model type %q (want BPE)", ErrUnsupported, tj.ModelType)
	}
	if tj.ByteFallback || tj.ContinuingSubwordPrefix != "" || tj.EndOfWordSuffix != "" || tj.UnkToken != "" {
		return nil, fmt.Errorf("%w: BPE with byte_fallback, unk_token, continuing_subword_prefix or end_of_word_suffix", ErrUnsupported)
	}
	nfc := false
	switch {
	case len(tj.Normalizers) == 0:
	case len(tj.Normalizers) == 1 && tj.Normalizers[0] == "NFC":
		nfc = true
	default:
		return nil, fmt.Errorf("%w: normalizer %v (want NFC or none)", ErrUnsupported, tj.Normalizers)
	}
	p := tj.PreTokenizers
	if len(p) != 2 || p[0].Type != "Split" || p[1].Type != "ByteLevel" {
		return nil, fmt.Errorf("%w: pre-tokenizer %+v (want Split then ByteLevel)", ErrUnsupported, p)
	}
	if p[0].PatternKind != "Regex" || p[0].Behavior != "Isolated" || p[0].Invert {
		return nil, fmt.Errorf("%w: Split pre-tokenizer %s %q behavior %q invert %v (want an Isolated regex)",
			ErrUnsupported, p[0].PatternKind, p[0].Pattern, p[0].Behavior, p[0].Invert)
	}
	if p[1].AddPrefixSpace || p[1].UseRegex {
		return nil, fmt.Errorf("%w: ByteLevel pre-tokenizer with add_prefix_space or use_regex", ErrUnsupported)
	}
	sp, err := newSplitter(p[0].Pattern)
	if err != nil {
		return nil, err
	}
	if tj.Decoder != "" && tj.Decoder != "ByteLevel" {
		return nil, fmt.Errorf("%w: decoder %q (want ByteLevel)", ErrUnsupported, tj.Decoder)
	}
	for _, a := range tj.Added {
		if a.LStrip || a.RStrip || a.SingleWord {
			return nil, fmt.Errorf("%w: added token %q uses lstrip, rstrip or single_word", ErrUnsupported, a.Content)
		}
	}
	return build(tj, sp, nfc)
}

// FromBin builds a tokenizer from the bytes of a tokenizer.bin (flash-moe
// BPET v1). That format keeps only the vocabulary, the merges and the added
// tokens, so FromBin assumes the Qwen3.5 pipeline (NFC, the Qwen3.5 split
// regex, byte-level BPE) and, lacking the special flag, treats the added
// tokens spelled <|…|> as special. Prefer tokenizer.json when it exists.
func FromBin(tokenizerBin []byte) (*Tokenizer, error) {
	tj, err := formats.ReadTokenizerBin(bytes.NewReader(tokenizerBin))
	if err != nil {
		return nil, err
	}
	for i := range tj.Added {
		c := tj.Added[i].Content
		tj.Added[i].Special = len(c) > 4 && strings.HasPrefix(c, "<|") && strings.HasSuffix(c, "|>")
	}
	sp, _ := newSplitter(PatternQwen35)
	return build(tj, sp, true)
}

// LoadDir loads the tokenizer of a model directory: tokenizer.json when it
// exists, else tokenizer.bin (see FromBin).
func LoadDir(modelDir string) (*Tokenizer, error) {
	path := filepath.Join(modelDir, "tokenizer.json")
	data, err := os.ReadFile(path)
	if err == nil {
		t, err := Load(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return t, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	path = filepath.Join(modelDir, "tokenizer.bin")
	data, err = os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s: %w", ErrNotFound, modelDir, err)
	}
	if err != nil {
		return nil, err
	}
	t, err := FromBin(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

func build(tj *formats.TokenizerJSON, sp splitter, nfc bool) (*Tokenizer, error) {
	model, err := newBPE(tj)
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{model: model, split: sp, nfc: nfc, ignoreMerges: tj.IgnoreMerges,
		added: make(map[string]formats.AddedToken), addedByID: make(map[int]formats.AddedToken)}
	n := len(model.tokens)
	for _, a := range tj.Added {
		n = max(n, a.ID+1)
		t.addedByID[a.ID] = a
		if a.Content == "" {
			continue
		}
		if _, dup := t.added[a.Content]; !dup {
			t.byFirst[a.Content[0]] = append(t.byFirst[a.Content[0]], a.Content)
		}
		t.added[a.Content] = a
	}
	for i := range t.byFirst {
		sort.SliceStable(t.byFirst[i], func(x, y int) bool { return len(t.byFirst[i][x]) > len(t.byFirst[i][y]) })
	}
	t.tokBytes = make([][]byte, n)
	for id, s := range model.tokens {
		if s != "" {
			t.tokBytes[id] = byteLevelBytes(s)
		}
	}
	for id, a := range t.addedByID {
		t.tokBytes[id] = byteLevelBytes(a.Content)
	}
	return t, nil
}

// VocabSize returns the number of ids the tokenizer can produce or decode:
// the largest vocabulary or added-token id plus one.
func (t *Tokenizer) VocabSize() int { return len(t.tokBytes) }

// Encode returns the ids of text, as HF tokenizers' encode with
// add_special_tokens=False: added tokens (special or not) are found in the
// raw text first, leftmost and then longest match; each stretch between
// them is NFC-normalized, split by the pre-tokenizer regex and BPE-encoded.
// No BOS or EOS is added. Invalid UTF-8 bytes are kept (split like U+FFFD,
// encoded as their own bytes).
func (t *Tokenizer) Encode(text string) []int {
	ids := make([]int, 0, len(text)/3+1)
	start := 0
	for i := 0; i < len(text); i++ {
		cands := t.byFirst[text[i]]
		if len(cands) == 0 {
			continue
		}
		for _, c := range cands {
			if strings.HasPrefix(text[i:], c) {
				ids = t.encodeText(ids, text[start:i])
				ids = append(ids, t.added[c].ID)
				start = i + len(c)
				i = start - 1
				break
			}
		}
	}
	return t.encodeText(ids, text[start:])
}

// encodeText encodes a stretch of text that holds no added token.
func (t *Tokenizer) encodeText(ids []int, s string) []int {
	if s == "" {
		return ids
	}
	if t.nfc && !norm.NFC.IsNormalString(s) {
		s = norm.NFC.String(s)
	}
	t.split.split(s, func(piece string) {
		if t.ignoreMerges {
			if id, ok := t.model.vocab[byteLevelString(piece)]; ok {
				ids = append(ids, int(id))
				return
			}
		}
		ids = t.model.encode(ids, piece)
	})
	return ids
}

func byteLevelString(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(formats.ByteLevelRune(s[i]))
	}
	return b.String()
}

// TokenBytes returns the bytes token id stands for (HF's ByteLevel decoder:
// the byte-level characters mapped back to bytes; an added token's content
// as is), or nil for an unknown id. A token may hold an incomplete UTF-8
// sequence: print through a StreamDecoder. The slice must not be modified.
func (t *Tokenizer) TokenBytes(id int) []byte {
	if id < 0 || id >= len(t.tokBytes) {
		return nil
	}
	return t.tokBytes[id]
}

// DecodeBytes returns the concatenated bytes of ids (unknown ids skipped).
func (t *Tokenizer) DecodeBytes(ids []int) []byte {
	var out []byte
	for _, id := range ids {
		out = append(out, t.TokenBytes(id)...)
	}
	return out
}

// Decode returns the text of ids, as HF tokenizers' decode with
// skip_special_tokens=False: the bytes of the tokens, with every maximal
// invalid UTF-8 subpart replaced by U+FFFD.
func (t *Tokenizer) Decode(ids []int) string {
	return string(appendLossy(nil, t.DecodeBytes(ids)))
}

// Token returns the string of id as tokenizer.json spells it (byte-level
// alphabet for vocabulary tokens, e.g. "Ġthe"; the content of an added
// token) and whether id exists.
func (t *Tokenizer) Token(id int) (string, bool) {
	if a, ok := t.addedByID[id]; ok {
		return a.Content, true
	}
	return t.model.tokenString(id)
}

// ID returns the id of a token given as tokenizer.json spells it: an added
// token's content ("<|im_end|>") or a vocabulary string ("Ġthe").
func (t *Tokenizer) ID(content string) (int, bool) {
	if a, ok := t.added[content]; ok {
		return a.ID, true
	}
	id, ok := t.model.vocab[content]
	return int(id), ok
}

// IsSpecial reports whether id is an added token marked special
// ("<|im_end|>" is; "<think>" is not in Qwen's tokenizer.json).
func (t *Tokenizer) IsSpecial(id int) bool { return t.addedByID[id].Special }

// IsAdded reports whether id is an added token (special or not).
func (t *Tokenizer) IsAdded(id int) bool {
	_, ok := t.addedByID[id]
	return ok
}

// EOS returns the ids generation stops on: <|im_end|> (end of turn) and
// <|endoftext|>, those the tokenizer has, in that order.
func (t *Tokenizer) EOS() []int {
	var ids []int
	for _, c := range []string{ImEnd, EndOfText} {
		if a, ok := t.added[c]; ok {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

// ChatPrompt returns the ChatML prompt for one user turn with the generation
// prompt, as Qwen3.5's chat template renders it: an optional system message,
// the user message, then "<|im_start|>assistant\n" followed by "<think>\n"
// (thinking) or "<think>\n\n</think>\n\n" (thinking off). No BOS. Encode the
// result with Encode: the markers become single ids.
func ChatPrompt(system, user string, thinking bool) string {
	var b strings.Builder
	if system != "" {
		b.WriteString(ImStart + "system\n" + system + ImEnd + "\n")
	}
	b.WriteString(ImStart + "user\n" + user + ImEnd + "\n" + ImStart + "assistant\n")
	if thinking {
		b.WriteString(ThinkOpen + "\n")
	} else {
		b.WriteString(ThinkOpen + "\n\n" + ThinkClose + "\n\n")
	}
	return b.String()
}

// ChatPrompt is the package-level ChatPrompt, for callers holding a
// Tokenizer.
func (t *Tokenizer) ChatPrompt(system, user string, thinking bool) string {
	return ChatPrompt(system, user, thinking)
}
