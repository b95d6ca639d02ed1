// Package formats holds fmoe's pure readers and writers. Nothing here opens
// a path: readers take an io.ReaderAt (with its size) or a byte slice,
// writers an io.Writer; the checkpoint, convert and pack packages do the
// file handling. Every parser validates defensively (size caps, checked
// arithmetic, offsets inside the file and consistent with shape × dtype)
// and reports failures as wrapped package sentinels (ErrHeader, ErrDType,
// ErrOffsets, ErrShape, ErrIndex, ErrConfig, ErrManifest, ErrLayout) that
// name the tensor, field or file section at fault.
//
// Formats (byte-level descriptions in docs/formats.md):
//
//   - safetensors: u64 LE header length N, N bytes of JSON
//     {name: {"dtype","shape","data_offsets":[b,e]}, "__metadata__": {...}},
//     then the data area; offsets are relative to the data area.
//     ReadSafetensorsHeader, PlanSafetensors, WriteSafetensors.
//   - model.safetensors.index.json: ParseSafetensorsIndex.
//   - config.json of a Qwen3.5-MoE model (flat or under text_config, with
//     MLX's quantization block): ParseConfig, Config.
//   - model_weights.json, flash-moe's manifest of model_weights.bin:
//     ParseManifest, ManifestConfig, ConfigFromManifest.
//   - packed routed experts and layout.json: NewExpertLayout, PackLayout,
//     ParsePackLayout.
//   - tokenizer.json, tokenizer.bin (BPET v1) and vocab.bin: see the
//     tokenizer*.go and vocab*.go files.
package formats
