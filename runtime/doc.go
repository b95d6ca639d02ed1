// Package runtime is fmoe's inference engine for Qwen3.5-MoE models: it
// loads the non-expert weights written by `fmoe extract` (model_weights.bin
// and .json), streams routed experts from the files written by
// `fmoe pack-experts` / `fmoe requant`, and runs the text forward pass
// (GatedDeltaNet and gated full-attention layers, sparse MoE with a shared
// expert) over a Backend. Every dimension comes from the model's config.
//
// The Backend interface (backend.go) is the narrow set of operations the
// forward pass needs; runtime/cpu is the pure-Go reference implementation and
// runtime/backendtest the conformance suite every backend passes.
package runtime
