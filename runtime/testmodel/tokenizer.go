package testmodel

import (
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/fmoe/fmoe/tokenizer"
)

// Tokenizer ids of WriteTokenizer: printable ASCII 0x21..0x7E are ids
// 0..93, space 94, newline 95, then the added tokens below. Config vocab
// sizes above 101 leave padding rows.
const (
	EndOfText = 96
	ImStart   = 97
	ImEnd     = 98
)

// WriteTokenizer writes a tiny byte-level BPE tokenizer.json (no merges:
// one token per ASCII character) that the tokenizer package loads.
func WriteTokenizer(dir string) error {
	vocab := map[string]int{}
	for c := 0x21; c <= 0x7e; c++ {
		vocab[string(rune(c))] = c - 0x21
	}
	vocab["\u0120"] = 94 // byte-level space
	vocab["\u010a"] = 95 // byte-level newline
	added := []map[string]any{}
	for i, c := range []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"} {
		added = append(added, map[string]any{"id": 96 + i, "content": c, "special": i < 3,
			"single_word": false, "lstrip": false, "rstrip": false, "normalized": false})
	}
	tj := map[string]any{
		"model":        map[string]any{"type": "BPE", "vocab": vocab, "merges": []any{}},
		"added_tokens": added,
		"normalizer":   map[string]any{"type": "NFC"},
		"pre_tokenizer": map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": tokenizer.PatternQwen35}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
		}},
		"decoder": map[string]any{"type": "ByteLevel"},
	}
	b, err := json.Marshal(tj)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "tokenizer.json"), b, 0o644)
}
