// Package synth writes synthetic Qwen3.5-MoE checkpoints in the layout of
// the mlx-community MLX repositories: config.json with a nested
// text_config and a quantization block, sharded safetensors with
// "language_model."-prefixed names and stacked switch_mlp experts,
// model.safetensors.index.json, and the real Qwen3 tokenizer files.
//
// Weights are random but valid and numerically sane (small Gaussian
// projections quantized with quant.Quantize, norms near 1, A_log and
// dt_bias in their trained ranges) and deterministic in the seed: every
// chunk of every tensor has its own generator, so the bytes do not depend on
// the number of workers. Generation is streamed per chunk of rows, so even
// the 397b-shape preset holds only a few chunks in memory at a time.
//
// The package is plan-then-execute: Plan turns Options into modules,
// tensors and shard layouts (pure, testable from shapes), Write executes a
// plan with bounded workers writing at fixed offsets.
package synth
