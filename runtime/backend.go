package runtime

import (
	"context"
	"time"

	"github.com/fmoe/fmoe/quant"
)

// Backend is the narrow set of operations the Qwen3.5-MoE forward pass needs.
// The engine (Engine) owns the model structure and calls these; a backend owns
// memory and kernels. The pure-Go CPU backend (package runtime/cpu) is the
// reference every other backend is tested against (runtime/backendtest).
//
// Activations are float32 matrices [T, n] (T tokens of a batch, row-major).
// Operations may run asynchronously (a GPU stream); Download is the only call
// that must wait for the results it returns. All calls come from one
// goroutine; a backend that needs an OS-thread-locked worker hides it.
type Backend interface {
	Name() string
	Close() error

	// NewTensor allocates a zeroed activation matrix [rows, cols].
	NewTensor(rows, cols int) (Tensor, error)
	// Upload copies src (len rows*cols) into t; Download copies t into dst.
	Upload(t Tensor, src []float32) error
	Download(t Tensor, dst []float32) error
	// LoadWeight makes a weight resident for the lifetime of the backend.
	LoadWeight(w *WeightData) (Weight, error)

	// Embed writes dequantized table rows ids[i] into dst row i.
	Embed(dst Tensor, table Weight, ids []int32) error
	// MatMul computes dst[t] = W · x[t] for every row t (W is [Out, In]).
	MatMul(dst Tensor, w Weight, x Tensor) error
	// RMSNorm normalises every group of len(w) consecutive values of each row
	// of x (the whole row, or one head): y = x/sqrt(mean(x²)+eps) ⊙ w.
	// dst may be x.
	RMSNorm(dst, x Tensor, w Weight, eps float32) error
	// Add computes dst += x elementwise.
	Add(dst, x Tensor) error
	// SwiGLU computes dst = silu(gate) ⊙ up elementwise; dst may be gate.
	SwiGLU(dst, gate, up Tensor) error
	// SigmoidGateAdd computes dst[t] += σ(gate[t][0]) · x[t] (gate is [T, 1]).
	SigmoidGateAdd(dst, x, gate Tensor) error

	// NewKVCache allocates the key/value cache of one full-attention layer.
	NewKVCache(p AttentionParams, maxTokens int) (KVCache, error)
	// Attention runs gated full attention for T new tokens at positions
	// cache.Len() … cache.Len()+T-1: qg is q_proj output [T, Heads*2*HeadDim]
	// (per head: HeadDim query values then HeadDim gate values), k and v are
	// [T, KVHeads*HeadDim]. It applies q/k RMSNorm (qNorm, kNorm, len HeadDim),
	// partial rotate-half RoPE, appends k and v to the cache, attends causally
	// with GQA, multiplies by σ(gate) and writes dst [T, Heads*HeadDim].
	Attention(dst, qg, k, v Tensor, cache KVCache, qNorm, kNorm Weight, p AttentionParams) error

	// NewDeltaState allocates the conv and recurrent state of one GatedDeltaNet layer.
	NewDeltaState(p DeltaParams) (DeltaState, error)
	// DeltaNet runs the GatedDeltaNet mixer for T tokens, in order: causal
	// depthwise conv (conv weight [ConvDim*Kernel], tap Kernel-1 = current)
	// + SiLU over qkv [T, ConvDim], l2-normalised q (scaled by 1/sqrt(KeyDim))
	// and k, β = σ(b), decay = exp(-exp(aLog)·softplus(a+dtBias)), the delta
	// rule in float32, then the gated RMSNorm (norm, len ValueDim) with
	// silu(z). z is [T, ValueHeads*ValueDim], b and a are [T, ValueHeads].
	// dst is [T, ValueHeads*ValueDim].
	DeltaNet(dst, qkv, z, b, a Tensor, st DeltaState, conv, dtBias, aLog, norm Weight, p DeltaParams) error

	// MoE computes the routed-expert part of a sparse MoE block for each row
	// of x: logits = router·x, softmax over all experts in float32, top-K,
	// weights renormalised over the K, dst[t] = Σ_e w_e · down_e(silu(gate_e x) ⊙ up_e x).
	// Experts come from src. Routing, when non-nil, receives the choices.
	MoE(ctx context.Context, dst, x Tensor, router Weight, src ExpertSource, p MoEParams, routing *Routing) error
}

// Tensor is a backend-owned float32 activation matrix.
type Tensor interface {
	Rows() int
	Cols() int
}

// Weight is a backend-resident weight: a matrix [Out, In] (quantized or dense
// float32) or a vector (Out == 1, In = length). Conventions used by the engine:
// RMSNorm weights, dt_bias and A_log are vectors; the depthwise conv weight is
// dense [ConvDim, ConvKernel] (element c*Kernel+k).
type Weight interface {
	Out() int
	In() int
}

// WeightData is a weight as it sits on the host: either quantized (Q) or
// dense float32 (F, Out*In values, row-major). Q's buffers may alias a
// read-only mapping; a backend must not write to them.
type WeightData struct {
	Name    string
	Out, In int
	Q       *quant.Matrix
	F       []float32
}

// KVCache is one attention layer's cache of post-norm, post-RoPE keys and values.
type KVCache interface {
	Len() int // tokens held
	Reset()
}

// DeltaState is one GatedDeltaNet layer's conv and recurrent state.
type DeltaState interface {
	Reset()
}

// AttentionParams are the dimensions of a gated full-attention layer.
type AttentionParams struct {
	Heads, KVHeads, HeadDim int
	RotaryDim               int     // leading dims of each head that RoPE rotates
	RopeTheta               float64 // base of the inverse frequencies
	Eps                     float32 // q/k RMSNorm epsilon
}

// DeltaParams are the dimensions of a GatedDeltaNet layer.
type DeltaParams struct {
	KeyHeads, ValueHeads int
	KeyDim, ValueDim     int // per head
	ConvKernel           int
	Eps                  float32 // gated RMSNorm epsilon
}

// ConvDim is the width of the convolved q‖k‖v projection.
func (p DeltaParams) ConvDim() int { return 2*p.KeyHeads*p.KeyDim + p.ValueHeads*p.ValueDim }

// MoEParams select the experts of one layer.
type MoEParams struct {
	Layer      int
	NumExperts int
	TopK       int
}

// Routing records, per token, the chosen experts and their renormalised
// weights. A backend overwrites Experts/Weights (len T, each len TopK, experts
// in descending weight order) and ADDS to the timing fields, which the engine
// reports with --timing (zero when a backend cannot measure them).
type Routing struct {
	Experts [][]int
	Weights [][]float32

	Route     time.Duration // router matvec, softmax, top-K
	Read      time.Duration // ExpertSource.ReadExperts (expert I/O)
	Compute   time.Duration // expert matvecs and combine
	BytesRead int64         // expert bytes read through the ExpertSource
}

// Syncer is an optional Backend capability: Sync waits until every queued
// operation has finished (used only to attribute time with --timing).
type Syncer interface {
	Sync() error
}

// Argmaxer is an optional Backend capability: Argmax returns the index of
// the largest of the first n values of row 0 of t (lowest index on ties; NaN
// never wins), computed where t lives. Greedy decoding uses it so that a
// token costs a 4-byte read instead of a logits download (vocab × 4 bytes)
// and a host scan.
type Argmaxer interface {
	Argmax(t Tensor, n int) (int, error)
}

// PrefillBatcher is an optional Backend capability: the number of prompt
// tokens a forward step should take when Options.Batch leaves it open (32
// otherwise). A GPU reads each weight once per step, so it gains from
// larger steps than a CPU does.
type PrefillBatcher interface {
	PrefillBatch() int
}

// ExpertSource provides the packed bytes of routed experts, one layer at a
// time. Implementations read from per-expert or per-layer files (pread into
// reused buffers) or serve from memory.
type ExpertSource interface {
	// Layout describes one expert's packed components.
	Layout() ExpertLayout
	// ReadExperts fills dst[i] (len Layout().Size) with expert ids[i] of layer.
	ReadExperts(ctx context.Context, layer int, ids []int, dst [][]byte) error
}

// ExpertLayout locates the gate, up and down projections inside one packed
// expert (see formats.ExpertLayout for the file-level description).
type ExpertLayout struct {
	Size                 int64
	Hidden, Intermediate int
	GroupSize            int
	Gate, Up, Down       ProjLayout
}

// ProjLayout is one quantized projection inside a packed expert.
type ProjLayout struct {
	Bits                      int
	Out, In                   int
	WOffset, SOffset, BOffset int64
	WSize, SSize, BSize       int64
}

// Matrix returns the projection as a quantized matrix aliasing expert bytes.
func (p ProjLayout) Matrix(expert []byte, group int) (*quant.Matrix, error) {
	return quant.FromBytes(p.Bits, group, p.Out, p.In,
		expert[p.WOffset:p.WOffset+p.WSize],
		expert[p.SOffset:p.SOffset+p.SSize],
		expert[p.BOffset:p.BOffset+p.BSize])
}
