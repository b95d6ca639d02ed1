// Package backendtest is the conformance suite every runtime.Backend passes.
//
// Each operation is checked against a naive float64 reference written
// plainly in this package (ref.go), on random inputs drawn from fixed seeds,
// for several shapes including multi-token batches, for dense and 2/4/8-bit
// quantized weights, with state carried across calls (KV cache: prefill then
// decode; GatedDeltaNet conv and recurrent state) and for the MoE block with an
// in-memory ExpertSource. Host buffers handed to the backend are followed by
// guard values that must survive, and weight buffers must not be written.
//
// Usage, from a backend's test:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T) runtime.Backend { return cpu.New() })
//	}
//
// newBackend is called once per subtest; the suite closes what it gets.
// Errors are compared with the reference as max|got-want| / max|want| per
// row (relative to the row's largest reference magnitude).
package backendtest
