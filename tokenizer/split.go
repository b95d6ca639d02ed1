package tokenizer

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The split patterns fmoe implements, exactly as tokenizer.json spells them
// (after JSON unescaping). Both come from the same family; Qwen3.5 adds
// \p{M} (combining marks) to the letter class and removes it from the
// punctuation class.
const (
	// PatternQwen3 is the Qwen2/Qwen3 pre-tokenizer regex.
	PatternQwen3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternQwen35 is the Qwen3.5 pre-tokenizer regex.
	PatternQwen35 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// splitter is a hand-written equivalent of one of the patterns above, run
// the way HF tokenizers runs it (Oniguruma, leftmost-first alternation,
// greedy quantifiers with backtracking, Split behavior "Isolated"). Go's
// regexp cannot express the (?!\S) lookahead.
//
// At a position with rune c, the first alternative that matches wins:
//
//  1. ' followed, case-insensitively (Unicode simple folding, so ſ counts
//     as s), by s, t, re, ve, m, ll or d: that contraction.
//  2. c is a letter (marks: letter or mark): the maximal letter run. Else, c
//     is not CR, LF or a number and the next rune is a letter: c plus the
//     letter run after it.
//  3. c is a number: c alone.
//  4. An optional U+0020 and then a maximal run (at least one) of runes
//     that are neither whitespace, letters (marks: nor marks) nor numbers,
//     then any CR/LF directly after it.
//  5. Otherwise c is whitespace; let W be the maximal whitespace run from c.
//     If W holds a CR or LF, the piece ends after its last CR/LF (\s*[\r\n]+).
//     Else, if W ends the text, the piece is W; if W has two or more runes,
//     W minus its last rune (\s+(?!\S)); else c alone (\s+).
//
// Letters are \p{L} (unicode.IsLetter), numbers \p{N} (unicode.IsNumber),
// marks \p{M} (unicode.IsMark), whitespace is Oniguruma's Unicode \s (Zs,
// Zl, Zp, U+0009–U+000D, U+0085), the same set as unicode.IsSpace. A byte
// that is not valid UTF-8 counts as U+FFFD (a symbol) and stays as is.
type splitter struct {
	marks bool // Qwen3.5: \p{M} joins the letter class
}

// newSplitter returns the splitter for a split regex, or an error naming the
// pattern when it is not one fmoe implements.
func newSplitter(pattern string) (splitter, error) {
	switch pattern {
	case PatternQwen3:
		return splitter{marks: false}, nil
	case PatternQwen35:
		return splitter{marks: true}, nil
	}
	return splitter{}, fmt.Errorf("%w: split regex %q is neither the Qwen3 nor the Qwen3.5 pattern", ErrUnsupported, pattern)
}

func (sp splitter) isLetter(r rune) bool {
	if r < utf8.RuneSelf {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z'
	}
	return unicode.IsLetter(r) || sp.marks && unicode.IsMark(r)
}

func isNumber(r rune) bool {
	if r < utf8.RuneSelf {
		return '0' <= r && r <= '9'
	}
	return unicode.IsNumber(r)
}

func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || '\t' <= r && r <= '\r'
	}
	return unicode.IsSpace(r)
}

// isPunct is the class of alternative 4: not whitespace, letter or number
// (or, with marks, mark).
func (sp splitter) isPunct(r rune) bool {
	return !isSpace(r) && !sp.isLetter(r) && !isNumber(r)
}

// split calls emit with every piece of s, in order; the pieces concatenate
// to s.
func (sp splitter) split(s string, emit func(piece string)) {
	for i := 0; i < len(s); {
		j := sp.next(s, i)
		emit(s[i:j])
		i = j
	}
}

// next returns the end of the piece that starts at i (i < len(s)).
func (sp splitter) next(s string, i int) int {
	c, w := utf8.DecodeRuneInString(s[i:])
	// 1. contractions
	if c == '\'' {
		if n := contraction(s[i+w:]); n > 0 {
			return i + w + n
		}
	}
	// 2. [^\r\n\p{L}\p{N}]?\p{L}+
	if sp.isLetter(c) {
		return sp.letterRun(s, i)
	}
	if c != '\r' && c != '\n' && !isNumber(c) && i+w < len(s) {
		if c2, _ := utf8.DecodeRuneInString(s[i+w:]); sp.isLetter(c2) {
			return sp.letterRun(s, i+w)
		}
	}
	// 3. \p{N}
	if isNumber(c) {
		return i + w
	}
	// 4. ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	j := i
	if c == ' ' {
		j = i + w
	}
	if k := sp.punctRun(s, j); k > j {
		for k < len(s) && (s[k] == '\r' || s[k] == '\n') {
			k++
		}
		return k
	}
	// 5-7. c is whitespace.
	end, lastNL, lastStart := i, -1, i
	for end < len(s) {
		r, rw := utf8.DecodeRuneInString(s[end:])
		if !isSpace(r) {
			break
		}
		if r == '\r' || r == '\n' {
			lastNL = end
		}
		lastStart = end
		end += rw
	}
	switch {
	case lastNL >= 0: // \s*[\r\n]+
		return lastNL + 1
	case end == len(s): // \s+(?!\S) at the end of the text
		return end
	case lastStart > i: // \s+(?!\S), giving back the last rune
		return lastStart
	}
	return end // \s+ (a single whitespace rune before a non-space)
}

func (sp splitter) letterRun(s string, i int) int {
	for i < len(s) {
		r, w := utf8.DecodeRuneInString(s[i:])
		if !sp.isLetter(r) {
			break
		}
		i += w
	}
	return i
}

func (sp splitter) punctRun(s string, i int) int {
	for i < len(s) {
		r, w := utf8.DecodeRuneInString(s[i:])
		if !sp.isPunct(r) {
			break
		}
		i += w
	}
	return i
}

// contractions in the order the pattern lists them.
var contractions = []string{"s", "t", "re", "ve", "m", "ll", "d"}

// contraction returns the byte length of the contraction suffix at the start
// of s (after the apostrophe), or 0.
func contraction(s string) int {
	for _, c := range contractions {
		if n := hasFoldPrefix(s, c); n > 0 {
			return n
		}
	}
	return 0
}

// hasFoldPrefix reports the byte length of the prefix of s that matches the
// ASCII lower-case word under Unicode simple case folding, or 0.
func hasFoldPrefix(s, word string) int {
	n := 0
	for _, want := range word {
		if n >= len(s) {
			return 0
		}
		r, w := utf8.DecodeRuneInString(s[n:])
		if !foldEqual(r, want) {
			return 0
		}
		n += w
	}
	return n
}

// foldEqual reports whether r is in the simple case-folding orbit of want.
func foldEqual(r, want rune) bool {
	if r == want {
		return true
	}
	for f := unicode.SimpleFold(want); f != want; f = unicode.SimpleFold(f) {
		if f == r {
			return true
		}
	}
	return false
}
