// Package convert implements `fmoe extract`: it turns an MLX-quantized
// Qwen3.5-MoE checkpoint into flash-moe's model directory files:
//
//   - model_weights.bin: every non-expert tensor's bytes, verbatim, in
//     Python-sorted order of the original tensor names, each starting at a
//     multiple of 64 bytes (zero padding between tensors, none at the end);
//     byte-identical to flash-moe's metal_infer/extract_weights.py.
//   - model_weights.json: the manifest (formats.Manifest) with names stripped
//     of "language_model." and a config block filled from config.json.
//   - vocab.bin and tokenizer.bin from tokenizer.json (formats), plus copies
//     of tokenizer.json and tokenizer_config.json.
//   - checksums.json: size and XXH3-64 of every file above (pack.Checksums),
//     so `fmoe verify` works on the directory and re-runs resume.
//
// PlanExtract is pure (tensor name → shape/dtype/location in, offsets out)
// and unit-tested without weights; Extractor.Run executes the plan with
// internal/filecopy.
package convert
