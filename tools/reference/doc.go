// Package reference holds no library code. The directory keeps the Python
// scripts that produce goldens from outside references (HF transformers,
// flash-moe's scripts; see docs/testing.md), and parity_test.go, which runs
// fmoe's whole chain (extract, pack-experts, requant, the CPU runtime) over the
// committed HF fixtures in testdata/hf and compares its logits with HF's.
package reference
