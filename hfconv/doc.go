// Package hfconv presents an original Hugging Face release of a Qwen3.5-MoE
// model (BF16, F16, F32 or FP8 E4M3 with block scales) as the MLX 4-bit
// checkpoint the rest of fmoe reads, computing every output tensor on
// demand: extract and pack-experts run unchanged over the converted view, so
// the original release is streamed shard by shard and never written twice.
//
// The conversion follows mlx-lm's sanitize + quantize rules (see
// docs/formats.md, "HF → MLX conversion"):
//
//   - names: model.language_model.X (or model.X) → language_model.model.X,
//     lm_head.weight → language_model.lm_head.weight; mtp.* and
//     model.visual.* are dropped;
//   - fused experts experts.gate_up_proj [E, 2I, H] split at I into
//     switch_mlp.gate_proj / up_proj, experts.down_proj → switch_mlp.down_proj;
//     per-expert keys experts.{e}.{gate,up,down}_proj.weight are stacked;
//   - conv1d [C, 1, K] → [C, K, 1] (same bytes);
//   - zero-centred norms (input/post-attention/final/q/k) get +1; the gated
//     norm linear_attn.norm is never shifted;
//   - every other tensor is cast to bf16 except A_log, which keeps its dtype;
//   - Linear and Embedding weights whose input dimension divides into groups
//     are quantized with quant.Quantize (affine, default 4-bit group 64;
//     mlp.gate and mlp.shared_expert_gate at 8 bits, recorded as overrides
//     in the output config like current MLX converters do).
//
// FP8 weights are dequantized with their weight_scale_inv block scales
// (w = fp8 × scale per block of 128×128 by default) and rounded to bf16
// before quantization, as a bf16 model would be.
package hfconv
