package qwen3

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"io"
)

//go:embed tokenizer.json.gz
var tokenizerJSONGz []byte

//go:embed tokenizer_config.json.gz
var tokenizerConfigJSONGz []byte

// TokenizerJSON returns the decompressed tokenizer.json (about 11 MB); each call decompresses anew.
func TokenizerJSON() ([]byte, error) { return gunzip("tokenizer.json.gz", tokenizerJSONGz) }

// TokenizerConfigJSON returns the decompressed tokenizer_config.json.
func TokenizerConfigJSON() ([]byte, error) {
	return gunzip("tokenizer_config.json.gz", tokenizerConfigJSONGz)
}

func gunzip(name string, gz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		return nil, fmt.Errorf("qwen3: %s: %w", name, err)
	}
	defer zr.Close()
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("qwen3: %s: %w", name, err)
	}
	return data, nil
}
