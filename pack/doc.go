// Package pack implements `fmoe pack-experts` and `fmoe verify`.
//
// pack-experts copies every routed expert of an MLX checkpoint (stacked
// tensors language_model.model.layers.L.mlp.switch_mlp.{gate,up,down}_proj.
// {weight,scales,biases} of shape [num_experts, ...]) into flash-moe's packed
// layout (formats.ExpertLayout: the nine components back to back), either one
// file per expert (layer_LL_expert_EEEE.bin) or one file per layer
// (layer_LL.bin, expert e at e × expert_size: flash-moe's Metal layout),
// plus layout.json (formats.PackLayout) and checksums.json (Checksums). Every
// expert's bytes equal the slice flash-moe's repack_experts.py writes.
//
// PlanPack is pure (tensor inventory in, copy plan out); execution is
// internal/filecopy, so memory stays bounded by workers × chunk size.
//
// Verify re-hashes a directory's files against checksums.json (and, with a
// source checkpoint, compares packed experts with the source tensors) and
// reports typed findings: Missing, Extra, SizeMismatch, Corrupt, Unrecorded,
// ContentMismatch.
package pack
