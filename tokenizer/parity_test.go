package tokenizer

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/fmoe/fmoe/tokenizer/qwen3"
)

var qwen3Once = sync.OnceValues(func() (*Tokenizer, error) {
	data, err := qwen3.TokenizerJSON()
	if err != nil {
		return nil, err
	}
	return Load(data)
})

// qwen3Tokenizer returns the embedded Qwen3 tokenizer (loaded once).
func qwen3Tokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := qwen3Once()
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

var qwen35Once = sync.OnceValues(func() (*Tokenizer, error) {
	tk, err := qwen3Once()
	if err != nil {
		return nil, err
	}
	c := *tk
	c.split = splitter{marks: true}
	return &c, nil
})

// qwen35ReTokenizer is the Qwen3 vocabulary with the Qwen3.5 split regex,
// as tools/reference/tokenizer_goldens.py builds it for HF.
func qwen35ReTokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	tk, err := qwen35Once()
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

type goldenLine struct {
	Text  string `json:"text"`
	IDs   []int  `json:"ids"`
	IDs35 []int  `json:"ids35"`
}

func readGolden(t testing.TB, path string) []goldenLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []goldenLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var g goldenLine
		if err := json.Unmarshal(sc.Bytes(), &g); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, g)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: empty", path)
	}
	return out
}

func checkIDs(t *testing.T, tk *Tokenizer, what, text string, want []int) {
	t.Helper()
	got := tk.Encode(text)
	if slices.Equal(got, want) {
		return
	}
	var pieces []string
	tk.split.split(text, func(p string) { pieces = append(pieces, p) })
	t.Errorf("%s %q:\n got  %v\n want %v\n pieces %q", what, text, got, want, pieces)
}

// TestParityHF: ids equal HF tokenizers' for every corpus line
// (testdata/tokenizer/golden_ids.jsonl, made by tools/reference/tokenizer_goldens.py).
func TestParityHF(t *testing.T) {
	path := "../testdata/tokenizer/golden_ids.jsonl"
	if p := os.Getenv("FMOE_TOKENIZER_GOLDEN"); p != "" {
		path = p // to compare with another reference while developing
	}
	corpus := readCorpus(t)
	golden := readGolden(t, path)
	if len(golden) != len(corpus) {
		t.Fatalf("%d golden lines for %d corpus lines: regenerate the goldens", len(golden), len(corpus))
	}
	tk := qwen3Tokenizer(t)
	for i, g := range golden {
		if g.Text != corpus[i] {
			t.Fatalf("golden line %d is for %q, corpus has %q: regenerate the goldens", i, g.Text, corpus[i])
		}
		checkIDs(t, tk, "qwen3", g.Text, g.IDs)
	}
}

func readCorpus(t testing.TB) []string {
	t.Helper()
	f, err := os.Open("../testdata/tokenizer/corpus.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s string
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if len(out) < 60 {
		t.Fatalf("corpus has %d lines", len(out))
	}
	return out
}

// TestParityHFRandom: 3000 random strings built from pieces that stress the
// pre-tokenizer, against HF with Qwen3's regex (ids) and Qwen3.5's (ids35).
func TestParityHFRandom(t *testing.T) {
	path := "../testdata/tokenizer/golden_random.jsonl"
	if p := os.Getenv("FMOE_TOKENIZER_RANDOM"); p != "" {
		path = p
	}
	tk, tk35 := qwen3Tokenizer(t), qwen35ReTokenizer(t)
	fails := 0
	for _, g := range readGolden(t, path) {
		checkIDs(t, tk, "qwen3", g.Text, g.IDs)
		if g.IDs35 != nil {
			checkIDs(t, tk35, "qwen3.5 regex", g.Text, g.IDs35)
		}
		if t.Failed() {
			if fails++; fails > 10 {
				t.Fatal("too many failures")
			}
		}
	}
}

// TestParityHFQwen35Regex: the corpus with the Qwen3.5 split regex
// (golden_ids_qwen35re.jsonl).
func TestParityHFQwen35Regex(t *testing.T) {
	corpus := readCorpus(t)
	golden := readGolden(t, "../testdata/tokenizer/golden_ids_qwen35re.jsonl")
	if len(golden) != len(corpus) {
		t.Fatalf("%d golden lines for %d corpus lines: regenerate the goldens", len(golden), len(corpus))
	}
	tk := qwen35ReTokenizer(t)
	for i, g := range golden {
		if g.Text != corpus[i] {
			t.Fatalf("golden line %d is for %q, corpus has %q", i, g.Text, corpus[i])
		}
		checkIDs(t, tk, "qwen3.5 regex", g.Text, g.IDs)
	}
}

// TestDecodeHF: Decode equals HF's decode(ids, skip_special_tokens=False),
// including the U+FFFD it puts for UTF-8 sequences cut between tokens; and
// a StreamDecoder fed one id at a time produces the same text.
func TestDecodeHF(t *testing.T) {
	f, err := os.Open("../testdata/tokenizer/golden_decode.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tk := qwen3Tokenizer(t)
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var g goldenLine
		if err := json.Unmarshal(sc.Bytes(), &g); err != nil {
			t.Fatal(err)
		}
		n++
		if got := tk.Decode(g.IDs); got != g.Text {
			t.Errorf("Decode(%v) = %q, want %q", g.IDs, got, g.Text)
		}
		d := tk.NewStreamDecoder()
		var streamed string
		for _, id := range g.IDs {
			streamed += d.Add(id)
		}
		if streamed += d.Flush(); streamed != g.Text {
			t.Errorf("streamed %v = %q, want %q", g.IDs, streamed, g.Text)
		}
	}
	if n < 100 {
		t.Fatalf("only %d decode goldens", n)
	}
}
