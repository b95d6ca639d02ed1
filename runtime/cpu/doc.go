// Package cpu is the pure-Go reference implementation of runtime.Backend.
//
// It computes in float32 (float64 where accumulation is cheap: norms,
// softmax), keeps the KV cache and GatedDeltaNet state in float32, and runs
// every matrix product through one function (matmul.go) over quantized
// (MLX affine, 2/4/8-bit) or dense float32 weights. Weights alias the host
// buffers they are loaded from (usually a read-only mapping) and are never
// written. Work is spread over all cores with a simple parallel-for.
//
// The MoE block routes on the CPU, groups the batch's tokens by expert and
// reads each needed expert once per call through the ExpertSource into
// reused buffers, reading the next group of experts while the current one is
// computed.
package cpu
