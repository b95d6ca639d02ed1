package formats

import (
	"bytes"
	"testing"
)

func FuzzParseTokenizerJSON(f *testing.F) {
	f.Add(readTestdata(f, "tiny_tokenizer.json"))
	f.Add(readTestdata(f, "tiny_tokenizer_strmerges.json"))
	f.Add([]byte(`{"model":{"vocab":{"a":0},"merges":["a a"]},"added_tokens":[{"id":1,"content":"<s>"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tj, err := ParseTokenizerJSON(data)
		if err != nil {
			return
		}
		// Whatever parses can be written, unless a string is too long for
		// the u16 length fields.
		var buf bytes.Buffer
		if err := WriteTokenizerBin(&buf, tj); err != nil {
			return
		}
		back, err := ReadTokenizerBin(bytes.NewReader(buf.Bytes()))
		if err != nil {
			// Strings that are not valid UTF-8 cannot come out of encoding/json.
			t.Fatalf("written tokenizer.bin does not read back: %v", err)
		}
		if len(back.Vocab) != len(tj.Vocab) || len(back.Merges) != len(tj.Merges) || len(back.Added) != len(tj.Added) {
			t.Fatal("round trip changed the counts")
		}
	})
}

func FuzzReadTokenizerBin(f *testing.F) {
	f.Add(readTestdata(f, "tiny_tokenizer.bin"))
	f.Add([]byte("BPET\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00\x01\x00a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tj, err := ReadTokenizerBin(bytes.NewReader(data))
		if err != nil {
			return
		}
		// An accepted file is canonical: writing it back gives the same bytes.
		var buf bytes.Buffer
		if err := WriteTokenizerBin(&buf, tj); err != nil {
			t.Fatalf("accepted file cannot be written back: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), data) {
			t.Fatal("accepted file is not rewritten byte for byte")
		}
	})
}

func FuzzReadVocabBin(f *testing.F) {
	f.Add(readTestdata(f, "tiny_vocab.bin"))
	f.Add([]byte("\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00a"))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ReadVocabBin(bytes.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := writeVocabEntries(&buf, entries); err != nil {
			t.Fatalf("accepted file cannot be written back: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), data) {
			t.Fatal("accepted file is not rewritten byte for byte")
		}
	})
}
