package formats

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/fmoe/fmoe/tokenizer/qwen3"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("../testdata/tokenizer/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func parseTiny(t testing.TB) *TokenizerJSON {
	t.Helper()
	tj, err := ParseTokenizerJSON(readTestdata(t, "tiny_tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return tj
}

func TestParseTokenizerJSONTiny(t *testing.T) {
	tj := parseTiny(t)
	if len(tj.Vocab) != 265 || len(tj.Merges) != 9 || len(tj.Added) != 4 {
		t.Fatalf("vocab %d merges %d added %d", len(tj.Vocab), len(tj.Merges), len(tj.Added))
	}
	if tj.Merges[2] != [2]string{"Ġt", "he"} {
		t.Errorf("merge 2 = %q", tj.Merges[2])
	}
	if a := tj.Added[1]; a.ID != 302 || a.Content != "<think>" || a.Special {
		t.Errorf("added[1] = %+v", a)
	}
	if !reflect.DeepEqual(tj.Normalizers, []string{"NFC"}) || tj.Decoder != "ByteLevel" || tj.ModelType != "BPE" {
		t.Errorf("pipeline: %v %q %q", tj.Normalizers, tj.Decoder, tj.ModelType)
	}
	if len(tj.PreTokenizers) != 2 || tj.PreTokenizers[0].Type != "Split" || tj.PreTokenizers[0].PatternKind != "Regex" ||
		tj.PreTokenizers[0].Behavior != "Isolated" || tj.PreTokenizers[1].Type != "ByteLevel" ||
		tj.PreTokenizers[1].AddPrefixSpace || tj.PreTokenizers[1].UseRegex {
		t.Errorf("pre-tokenizers: %+v", tj.PreTokenizers)
	}
	// "a b" string merges parse to the same pairs.
	ts, err := ParseTokenizerJSON(readTestdata(t, "tiny_tokenizer_strmerges.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ts.Merges, tj.Merges) {
		t.Errorf("string merges %q != pair merges %q", ts.Merges, tj.Merges)
	}
}

func TestParseTokenizerJSONErrors(t *testing.T) {
	base := `{"added_tokens":%A%,"model":{"type":"BPE","vocab":%V%,"merges":%M%}}`
	mk := func(v, m, a string) string {
		return strings.NewReplacer("%V%", v, "%M%", m, "%A%", a).Replace(base)
	}
	ok := mk(`{"a":0,"b":1,"ab":2}`, `[["a","b"]]`, `[{"id":3,"content":"<x>"}]`)
	if _, err := ParseTokenizerJSON([]byte(ok)); err != nil {
		t.Fatalf("valid input rejected: %v", err)
	}
	for name, in := range map[string]string{
		"not json":             `{`,
		"no model":             `{"added_tokens":[]}`,
		"no vocab":             `{"model":{"type":"BPE"}}`,
		"negative id":          mk(`{"a":-1}`, `[]`, `[]`),
		"id too large":         mk(`{"a":16777216}`, `[]`, `[]`),
		"duplicate ids":        mk(`{"a":0,"b":0}`, `[]`, `[]`),
		"merge of one":         mk(`{"a":0}`, `[["a"]]`, `[]`),
		"merge of three":       mk(`{"a":0}`, `[["a","b","c"]]`, `[]`),
		"merge string nospace": mk(`{"a":0}`, `["ab"]`, `[]`),
		"merge string 2 space": mk(`{"a":0}`, `["a b c"]`, `[]`),
		"merge number":         mk(`{"a":0}`, `[7]`, `[]`),
		"added without id":     mk(`{"a":0}`, `[]`, `[{"content":"x"}]`),
		"added id taken":       mk(`{"a":0}`, `[]`, `[{"id":0,"content":"x"}]`),
		"added content moved":  mk(`{"a":0}`, `[]`, `[{"id":5,"content":"a"}]`),
		"added twice":          mk(`{"a":0}`, `[]`, `[{"id":5,"content":"x"},{"id":6,"content":"x"}]`),
		"added id negative":    mk(`{"a":0}`, `[]`, `[{"id":-2,"content":"x"}]`),
		"normalizer no type":   `{"normalizer":{},"model":{"vocab":{}}}`,
		"split bad pattern":    `{"pre_tokenizer":{"type":"Split","pattern":{}},"model":{"vocab":{}}}`,
	} {
		_, err := ParseTokenizerJSON([]byte(in))
		if !errors.Is(err, ErrTokenizerJSON) {
			t.Errorf("%s: err = %v, want ErrTokenizerJSON", name, err)
		}
	}
}

// The goldens were written by flash-moe's export_tokenizer.py and
// export_vocab.py (see testdata/tokenizer/README.md).
func TestWriteTokenizerBinMatchesFlashMoe(t *testing.T) {
	tj := parseTiny(t)
	var buf bytes.Buffer
	if err := WriteTokenizerBin(&buf, tj); err != nil {
		t.Fatal(err)
	}
	if want := readTestdata(t, "tiny_tokenizer.bin"); !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("tokenizer.bin differs from export_tokenizer.py's (%d vs %d bytes)", buf.Len(), len(want))
	}
	buf.Reset()
	if err := WriteVocabBin(&buf, tj); err != nil {
		t.Fatal(err)
	}
	if want := readTestdata(t, "tiny_vocab.bin"); !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("vocab.bin differs from export_vocab.py's (%d vs %d bytes)", buf.Len(), len(want))
	}
}

// flashMoeGolden checks data against testdata/flashmoe/qwen3_tokenizer: the
// SHA-256 and size of flash-moe's script output for the embedded Qwen3
// tokenizer.json (SHA256SUMS) and its first and last 64 KiB.
func flashMoeGolden(t *testing.T, name string, data []byte) {
	t.Helper()
	dir := "../testdata/flashmoe/qwen3_tokenizer/"
	sums, err := os.ReadFile(dir + "SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(string(sums), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != name {
			continue
		}
		found = true
		h := sha256.Sum256(data)
		if got := hex.EncodeToString(h[:]); got != f[0] || strconv.Itoa(len(data)) != f[1] {
			t.Errorf("%s: sha256 %s size %d, flash-moe's script wrote %s size %s", name, got, len(data), f[0], f[1])
		}
	}
	if !found {
		t.Fatalf("%s not in %sSHA256SUMS", name, dir)
	}
	head, err := os.ReadFile(dir + name + ".head64k")
	if err != nil {
		t.Fatal(err)
	}
	tail, err := os.ReadFile(dir + name + ".tail64k")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, head) {
		t.Errorf("%s: first 64 KiB differ from flash-moe's", name)
	}
	if !bytes.HasSuffix(data, tail) {
		t.Errorf("%s: last 64 KiB differ from flash-moe's", name)
	}
}

func TestQwen3MatchesFlashMoe(t *testing.T) {
	data, err := qwen3.TokenizerJSON()
	if err != nil {
		t.Fatal(err)
	}
	tj, err := ParseTokenizerJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(tj.Vocab) != 151643 || len(tj.Merges) != 151387 || len(tj.Added) != 26 {
		t.Errorf("vocab %d merges %d added %d", len(tj.Vocab), len(tj.Merges), len(tj.Added))
	}
	var tb, vb bytes.Buffer
	if err := WriteTokenizerBin(&tb, tj); err != nil {
		t.Fatal(err)
	}
	if err := WriteVocabBin(&vb, tj); err != nil {
		t.Fatal(err)
	}
	flashMoeGolden(t, "tokenizer.bin", tb.Bytes())
	flashMoeGolden(t, "vocab.bin", vb.Bytes())
	back, err := ReadTokenizerBin(bytes.NewReader(tb.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Vocab, tj.Vocab) || !reflect.DeepEqual(back.Merges, tj.Merges) {
		t.Error("tokenizer.bin round trip changed vocab or merges")
	}
	entries, err := ReadVocabBin(bytes.NewReader(vb.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 151669 || string(entries[tj.Vocab["Ġthe"]]) != " the" || string(entries[151644]) != "<|im_start|>" {
		t.Errorf("vocab.bin: %d entries, \"Ġthe\" -> %q", len(entries), entries[tj.Vocab["Ġthe"]])
	}
}

func TestTokenizerBinRoundTrip(t *testing.T) {
	tj := parseTiny(t)
	var buf bytes.Buffer
	if err := WriteTokenizerBin(&buf, tj); err != nil {
		t.Fatal(err)
	}
	back, err := ReadTokenizerBin(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Vocab, tj.Vocab) || !reflect.DeepEqual(back.Merges, tj.Merges) {
		t.Fatal("vocab or merges changed")
	}
	for i, a := range back.Added {
		if a.ID != tj.Added[i].ID || a.Content != tj.Added[i].Content {
			t.Errorf("added[%d] = %+v, want %+v", i, a, tj.Added[i])
		}
	}
}

// messWith returns a copy of b changed by f.
func messWith(b []byte, f func(b []byte) []byte) []byte {
	return f(append([]byte(nil), b...))
}

func TestReadTokenizerBinCorrupt(t *testing.T) {
	good := readTestdata(t, "tiny_tokenizer.bin")
	for name, c := range map[string]struct {
		b         []byte
		truncated bool
	}{
		"empty":        {nil, true},
		"short header": {good[:10], true},
		"truncated":    {good[:len(good)-1], true},
		"mid vocab":    {good[:100], true},
		"bad magic":    {messWith(good, func(b []byte) []byte { b[0] = 'X'; return b }), false},
		"bad version":  {messWith(good, func(b []byte) []byte { b[4] = 2; return b }), false},
		"huge vocab":   {messWith(good, func(b []byte) []byte { b[11] = 0x7f; return b }), false},
		"huge merges":  {messWith(good, func(b []byte) []byte { b[15] = 0x7f; return b }), false},
		"huge added":   {messWith(good, func(b []byte) []byte { b[19] = 0x7f; return b }), false},
		"trailing":     {append(append([]byte(nil), good...), 0), false},
		"ids unsorted": {messWith(good, func(b []byte) []byte { b[20] = 9; return b }), false}, // first id 0 -> 9, above the next
		"bad utf8":     {messWith(good, func(b []byte) []byte { b[26] = 0xff; return b }), false},
	} {
		_, err := ReadTokenizerBin(bytes.NewReader(c.b))
		if !errors.Is(err, ErrTokenizerBin) {
			t.Errorf("%s: err = %v, want ErrTokenizerBin", name, err)
		}
		if c.truncated != errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: err = %v, truncated = %v", name, err, c.truncated)
		}
	}
}

func TestReadVocabBinCorrupt(t *testing.T) {
	good := readTestdata(t, "tiny_vocab.bin")
	entries, err := ReadVocabBin(bytes.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 304 || entries[270] != nil || string(entries[303]) != " \xe9☃ x" || string(entries[0]) != "\x00" {
		t.Errorf("entries: %d, [270]=%q [303]=%q [0]=%q", len(entries), entries[270], entries[303], entries[0])
	}
	for name, c := range map[string]struct {
		b         []byte
		truncated bool
	}{
		"empty":        {nil, true},
		"short header": {good[:6], true},
		"truncated":    {good[:len(good)-1], true},
		"zero entries": {[]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, false},
		"huge":         {messWith(good, func(b []byte) []byte { b[3] = 0x10; return b }), false},
		"max_id":       {messWith(good, func(b []byte) []byte { b[4]++; return b }), false},
		"trailing":     {append(append([]byte(nil), good...), 0), false},
	} {
		_, err := ReadVocabBin(bytes.NewReader(c.b))
		if !errors.Is(err, ErrVocabBin) {
			t.Errorf("%s: err = %v, want ErrVocabBin", name, err)
		}
		if c.truncated != errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("%s: err = %v, truncated = %v", name, err, c.truncated)
		}
	}
}

func TestWriteRejectsUnrepresentable(t *testing.T) {
	long := strings.Repeat("a", 1<<16)
	for name, tj := range map[string]*TokenizerJSON{
		"long token":  {Vocab: map[string]int{long: 0}},
		"long added":  {Vocab: map[string]int{}, Added: []AddedToken{{ID: 1, Content: long}}},
		"dup ids":     {Vocab: map[string]int{"a": 1, "b": 1}},
		"negative id": {Vocab: map[string]int{"a": -1}},
	} {
		if err := WriteTokenizerBin(io.Discard, tj); !errors.Is(err, ErrTokenizerJSON) {
			t.Errorf("%s: WriteTokenizerBin err = %v", name, err)
		}
		if err := WriteVocabBin(io.Discard, tj); !errors.Is(err, ErrTokenizerJSON) {
			t.Errorf("%s: WriteVocabBin err = %v", name, err)
		}
	}
	if err := WriteVocabBin(io.Discard, &TokenizerJSON{Vocab: map[string]int{}}); !errors.Is(err, ErrTokenizerJSON) {
		t.Errorf("empty vocabulary: err = %v", err)
	}
}

func TestByteLevelAlphabet(t *testing.T) {
	seen := map[rune]bool{}
	for b := 0; b < 256; b++ {
		r := ByteLevelRune(byte(b))
		if seen[r] {
			t.Fatalf("rune %U used twice", r)
		}
		seen[r] = true
		if back, ok := ByteLevelByte(r); !ok || back != byte(b) {
			t.Errorf("byte %#x -> %U -> %#x %v", b, r, back, ok)
		}
	}
	if ByteLevelRune(' ') != 'Ġ' || ByteLevelRune('\n') != 'Ċ' || ByteLevelRune('a') != 'a' {
		t.Error("space/newline/a mapped wrongly")
	}
	if got := string(ByteLevelDecode("Ġhé☃")); got != " h\xe9☃" {
		t.Errorf("ByteLevelDecode = %q", got)
	}
}
