// Package tokenizer is fmoe's byte-level BPE tokenizer for Qwen models,
// equal to Hugging Face tokenizers on the same tokenizer.json (tested on a
// committed corpus against goldens made by HF tokenizers).
//
// Encoding (Tokenizer.Encode) follows HF's pipeline:
//
//  1. Added tokens (tokenizer.json's added_tokens, special or not) are found
//     in the raw text first, leftmost then longest match, and become their
//     ids; "<think>" or "<|im_start|>" typed in a prompt are single tokens.
//  2. Each stretch between them is normalized to NFC.
//  3. It is split by a hand-written equivalent of the split regex the
//     tokenizer.json declares (Qwen3's or Qwen3.5's, which adds \p{M} to the
//     letter class; any other pattern is rejected), including the \s+(?!\S)
//     lookahead that Go's regexp cannot express. See splitter.
//  4. Each piece's bytes are mapped to GPT-2's byte-level alphabet and
//     merged by BPE, lowest merge rank first, leftmost among equals (HF's
//     Word::merge_all), with a cache of piece -> ids.
//
// Decoding maps tokens back to bytes; StreamDecoder holds back UTF-8
// sequences split across tokens so streamed output is never garbled.
// ChatPrompt builds the ChatML prompt of Qwen3.5's chat template (no BOS).
//
// Sources: Load (tokenizer.json), FromBin (flash-moe's tokenizer.bin, which
// lacks the pipeline description, so the Qwen3.5 one is assumed), LoadDir
// (a model directory, preferring tokenizer.json). The package qwen3 embeds
// the real Qwen3 tokenizer for tests and demos.
package tokenizer
