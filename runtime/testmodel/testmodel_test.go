package testmodel_test

import (
	"testing"

	"github.com/fmoe/fmoe/runtime/testmodel"
	"github.com/fmoe/fmoe/tokenizer"
)

func TestTokenizerLoads(t *testing.T) {
	dir := t.TempDir()
	if err := testmodel.WriteTokenizer(dir); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode("Hi there\n<|im_end|>")
	want := []int{'H' - 0x21, 'i' - 0x21, 94, 't' - 0x21, 'h' - 0x21, 'e' - 0x21, 'r' - 0x21, 'e' - 0x21, 95, testmodel.ImEnd}
	if len(ids) != len(want) {
		t.Fatalf("Encode = %v, want %v", ids, want)
	}
	for i := range ids {
		if ids[i] != want[i] {
			t.Fatalf("Encode = %v, want %v", ids, want)
		}
	}
	if got := tok.Decode(ids[:8]); got != "Hi there" {
		t.Fatalf("Decode = %q", got)
	}
}
