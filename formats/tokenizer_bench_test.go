package formats

import (
	"testing"

	"github.com/fmoe/fmoe/tokenizer/qwen3"
)

func BenchmarkParseTokenizerJSONQwen3(b *testing.B) {
	data, err := qwen3.TokenizerJSON()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseTokenizerJSON(data); err != nil {
			b.Fatal(err)
		}
	}
}
