package tokenizer

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/tokenizer/qwen3"
)

func TestSplitterPieces(t *testing.T) {
	q3, q35 := splitter{}, splitter{marks: true}
	for _, c := range []struct {
		sp   splitter
		in   string
		want []string
	}{
		{q3, "Hello, world!", []string{"Hello", ",", " world", "!"}},
		{q3, "a  b", []string{"a", " ", " b"}},
		{q3, "a   ", []string{"a", "   "}},
		{q3, "x \t\ty", []string{"x", " \t", "\ty"}},
		{q3, "a \n\n b", []string{"a", " \n\n", " b"}},
		{q3, "a\r\n\r\n  \tb", []string{"a", "\r\n\r\n", "  ", "\tb"}},
		{q3, "end.\r\n", []string{"end", ".\r\n"}},
		{q3, "  !!x", []string{" ", " !!", "x"}},
		{q3, "\t!x", []string{"\t", "!x"}},
		{q3, "IT'S we'LL 'ſ 'x", []string{"IT", "'S", " we", "'LL", " '", "ſ", " '", "x"}},
		{q3, "2024年", []string{"2", "0", "2", "4", "年"}},
		{q3, "e\u0301e", []string{"e", "\u0301e"}}, // Qwen3: a mark is a prefix or punctuation
		{q35, "e\u0301e", []string{"e\u0301e"}},    // Qwen3.5: marks join letters
		{q3, "क्षत्र", []string{"क", "्षत", "्र"}}, // virama (Mn) prefixes the next letters in Qwen3
		{q35, "क्षत्र", []string{"क्षत्र"}},
		{q3, "a\u00a0\u00a0b", []string{"a", "\u00a0", "\u00a0b"}},
		{q3, "\xff\xfeab", []string{"\xff\xfe", "ab"}}, // invalid bytes: symbols
		{q3, "", nil},
	} {
		var got []string
		c.sp.split(c.in, func(p string) { got = append(got, p) })
		if !slices.Equal(got, c.want) {
			t.Errorf("split(%q, marks=%v) = %q, want %q", c.in, c.sp.marks, got, c.want)
		}
	}
}

func TestEncodeBasics(t *testing.T) {
	tk := qwen3Tokenizer(t)
	if got, want := tk.Encode("Hello, world!"), []int{9707, 11, 1879, 0}; !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	imStart, _ := tk.ID(ImStart)
	imEnd, _ := tk.ID(ImEnd)
	eot, _ := tk.ID(EndOfText)
	think, _ := tk.ID(ThinkOpen)
	if imStart != 151644 || imEnd != 151645 || eot != 151643 || think != 151667 {
		t.Errorf("ids: im_start %d im_end %d endoftext %d think %d", imStart, imEnd, eot, think)
	}
	if !slices.Equal(tk.EOS(), []int{imEnd, eot}) {
		t.Errorf("EOS = %v", tk.EOS())
	}
	if !tk.IsSpecial(imEnd) || tk.IsSpecial(think) || !tk.IsAdded(think) || tk.IsSpecial(9707) {
		t.Error("IsSpecial/IsAdded wrong")
	}
	if id, ok := tk.ID("Ġworld"); !ok || id != 1879 {
		t.Errorf("ID(Ġworld) = %d %v", id, ok)
	}
	if s, ok := tk.Token(1879); !ok || s != "Ġworld" {
		t.Errorf("Token(1879) = %q %v", s, ok)
	}
	if _, ok := tk.Token(-1); ok || tk.TokenBytes(1<<30) != nil {
		t.Error("out-of-range ids accepted")
	}
	if tk.VocabSize() != 151669 {
		t.Errorf("VocabSize = %d", tk.VocabSize())
	}
}

func TestChatPrompt(t *testing.T) {
	got := ChatPrompt("Be brief.", "Hi", true)
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"
	if got != want {
		t.Errorf("ChatPrompt = %q, want %q", got, want)
	}
	got = ChatPrompt("", "Hi", false)
	want = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
	if got != want {
		t.Errorf("ChatPrompt = %q, want %q", got, want)
	}
	tk := qwen3Tokenizer(t)
	ids := tk.Encode(ChatPrompt("", "Hi", true))
	// <|im_start|> user \n Hi <|im_end|> \n <|im_start|> assistant \n <think> \n
	if want := []int{151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198, 151667, 198}; !slices.Equal(ids, want) {
		t.Errorf("chat ids = %v, want %v", ids, want)
	}
}

// Added tokens: leftmost, then longest; near misses are ordinary text.
func TestAddedTokenMatching(t *testing.T) {
	data, err := os.ReadFile("../testdata/tokenizer/tiny_tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	// A tokenizer whose added tokens overlap: "<a>" and "<a>b".
	tj := strings.Replace(string(data), `"content": "<think>"`, `"content": "<a>b"`, 1)
	tj = strings.Replace(tj, `"content": "<|endoftext|>"`, `"content": "<a>"`, 1)
	tk, err := Load([]byte(tj))
	if err != nil {
		t.Fatal(err)
	}
	ids := tk.Encode("x<a>b<a>c<a")
	want := []int{'x', 302, 300, 'c', '<', 'a'}
	if !slices.Equal(ids, want) {
		t.Errorf("Encode = %v, want %v", ids, want)
	}
}

func TestLoadRejectsUnsupported(t *testing.T) {
	data, err := os.ReadFile("../testdata/tokenizer/tiny_tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if _, err := Load(data); err != nil {
		t.Fatalf("tiny tokenizer rejected: %v", err)
	}
	for name, in := range map[string]string{
		"other regex":      strings.Replace(s, `\\p{N}|`, `\\p{N}+|`, 1),
		"NFKC":             strings.Replace(s, `"type": "NFC"`, `"type": "NFKC"`, 1),
		"WordPiece":        strings.Replace(s, `"type": "BPE"`, `"type": "WordPiece"`, 1),
		"byte fallback":    strings.Replace(s, `"byte_fallback": false`, `"byte_fallback": true`, 1),
		"removed behavior": strings.Replace(s, `"Isolated"`, `"Removed"`, 1),
		"prefix space":     strings.Replace(s, `"add_prefix_space": false`, `"add_prefix_space": true`, 1),
		"lstrip":           strings.Replace(s, `"lstrip": false`, `"lstrip": true`, 1),
	} {
		if in == s {
			t.Fatalf("%s: replacement did not apply", name)
		}
		if _, err := Load([]byte(in)); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", name, err)
		}
	}
	bad := strings.Replace(s, `"Ġt",`+"\n"+`    "he"`, `"Ġt",`+"\n"+`    "zz"`, 1)
	if bad == s {
		t.Fatal("merge replacement did not apply")
	}
	if _, err := Load([]byte(bad)); !errors.Is(err, ErrInvalid) {
		t.Errorf("merge outside the vocabulary: err = %v, want ErrInvalid", err)
	}
	if _, err := Load([]byte("{")); !errors.Is(err, formats.ErrTokenizerJSON) {
		t.Errorf("bad JSON: err = %v", err)
	}
}

// FromBin assumes the Qwen3.5 pipeline: on tokenizer.bin written from the
// Qwen3 tokenizer.json it must equal HF with the Qwen3.5 regex.
func TestFromBinAndLoadDir(t *testing.T) {
	data, err := qwen3.TokenizerJSON()
	if err != nil {
		t.Fatal(err)
	}
	tj, err := formats.ParseTokenizerJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	var bin bytes.Buffer
	if err := formats.WriteTokenizerBin(&bin, tj); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.bin"), bin.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	fromBin, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	golden := readGolden(t, "../testdata/tokenizer/golden_ids_qwen35re.jsonl")
	for _, g := range golden {
		checkIDs(t, fromBin, "tokenizer.bin", g.Text, g.IDs)
	}
	imEnd, _ := fromBin.ID(ImEnd)
	think, _ := fromBin.ID(ThinkOpen)
	if !fromBin.IsSpecial(imEnd) || fromBin.IsSpecial(think) {
		t.Error("tokenizer.bin: <|im_end|> should be special, <think> not")
	}
	// tokenizer.json is preferred when both exist.
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	fromJSON, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fromJSON.split.marks {
		t.Error("LoadDir did not prefer tokenizer.json (Qwen3 regex)")
	}
	_, err = LoadDir(t.TempDir())
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("empty dir: err = %v", err)
	}
	if _, err := FromBin([]byte("BPET")); !errors.Is(err, formats.ErrTokenizerBin) {
		t.Errorf("truncated tokenizer.bin: err = %v", err)
	}
}

func TestStreamDecoderHoldsBackPartialUTF8(t *testing.T) {
	tk := qwen3Tokenizer(t)
	text := "emoji 👨‍👩‍👧 and 你好 and é"
	ids := tk.Encode(text)
	d := tk.NewStreamDecoder()
	var out strings.Builder
	for _, id := range ids {
		chunk := d.Add(id)
		if !utf8.ValidString(chunk) || strings.ContainsRune(chunk, utf8.RuneError) {
			t.Fatalf("chunk %q after id %d is not clean UTF-8", chunk, id)
		}
		out.WriteString(chunk)
	}
	out.WriteString(d.Flush())
	if out.String() != text {
		t.Errorf("streamed %q, want %q", out.String(), text)
	}
	// A dangling lead byte is flushed as U+FFFD.
	d.pending = []byte{0xE4, 0xBD}
	if got := d.Flush(); got != "\uFFFD" {
		t.Errorf("Flush of a cut sequence = %q", got)
	}
}

func TestLossy(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"abc", "abc"},
		{"\xe4\xbd\xa0", "你"},
		{"\xe4\xbd", "\ufffd"},                 // one maximal subpart
		{"\xe4\xbda", "\ufffda"},               // cut sequence then ASCII
		{"\xe0\x80", "\ufffd\ufffd"},           // E0 80: not a valid second byte
		{"\xed\xa0\x80", "\ufffd\ufffd\ufffd"}, // surrogate
		{"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"},
		{"\xff", "\ufffd"},
		{"\xf0\x9f\x98", "\ufffd"},
	} {
		if got := string(appendLossy(nil, []byte(c.in))); got != c.want {
			t.Errorf("lossy(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzEncodeDecode: without added tokens, the bytes of Encode(s) decode to
// NFC(s) (invalid UTF-8 kept); for valid UTF-8 that is already NFC,
// Decode(Encode(s)) == s; and encoding is stable on decoded text.
func FuzzEncodeDecode(f *testing.F) {
	for _, s := range []string{"", "Hello, world!", "e\u0301 你好 👨‍👩‍👧", "a  \r\n\t b<think>c", "\xff\xfe", "'S 'll  ", "<|im_start|>x"} {
		f.Add(s)
	}
	tk, tk35 := qwen3Tokenizer(f), qwen35ReTokenizer(f)
	f.Fuzz(func(t *testing.T, s string) {
		if !strings.Contains(s, "<") {
			if b := tk35.DecodeBytes(tk35.Encode(s)); string(b) != norm.NFC.String(s) {
				t.Fatalf("Qwen3.5 regex: DecodeBytes(Encode(%q)) = %q", s, b)
			}
		}
		ids := tk.Encode(s)
		got := tk.Decode(ids)
		if !strings.Contains(s, "<") {
			// No added token: the bytes come back NFC-normalized, invalid
			// UTF-8 included.
			if b := tk.DecodeBytes(ids); string(b) != norm.NFC.String(s) {
				t.Fatalf("DecodeBytes(Encode(%q)) = %q, want NFC %q", s, b, norm.NFC.String(s))
			}
		}
		if !utf8.ValidString(s) {
			return
		}
		if norm.NFC.IsNormalString(s) && got != s {
			t.Fatalf("Decode(Encode(%q)) = %q", s, got)
		}
		if tk.Decode(tk.Encode(got)) != got {
			t.Fatalf("not stable on %q", got)
		}
	})
}

func BenchmarkEncode1MB(b *testing.B) {
	tk := qwen3Tokenizer(b)
	corpus := strings.Join(readCorpus(b), "\n")
	var sb strings.Builder
	for sb.Len() < 1<<20 {
		sb.WriteString(corpus)
	}
	text := sb.String()
	b.SetBytes(int64(len(text)))
	b.ResetTimer()
	for b.Loop() {
		tk.Encode(text)
	}
}

// BenchmarkEncodeLongPieces: 1 MB pieces (no spaces; one run of spaces),
// which bypass the cache and exercise the heap merge.
func BenchmarkEncodeLongPieces(b *testing.B) {
	tk := qwen3Tokenizer(b)
	for _, c := range []struct{ name, unit string }{{"letters", "abcdefghij"}, {"spaces", " "}, {"cjk", "你好世界"}} {
		text := strings.Repeat(c.unit, (1<<20)/len(c.unit))
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				tk.Encode(text)
			}
		})
	}
}

// TestConcurrentEncode: one Tokenizer shared by goroutines gives the same
// ids as sequential use (run with -race).
func TestConcurrentEncode(t *testing.T) {
	data, err := os.ReadFile("../testdata/tokenizer/tiny_tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	tk, err := Load(data)
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{"the in the", " éé 你你", "a\n\nb  c", "<think>the<|im_end|>"}
	want := make([][]int, len(texts))
	for i, s := range texts {
		want[i] = tk.Encode(s)
	}
	done := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for r := 0; r < 50; r++ {
				for i, s := range texts {
					if got := tk.Encode(s); !slices.Equal(got, want[i]) {
						done <- errors.New("concurrent Encode differs for " + s)
						return
					}
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
