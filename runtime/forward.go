package runtime

import (
	"context"
	"fmt"
	"time"
)

// Timing accumulates where forward time goes, per layer (filled when
// Session.Timing is non-nil). Mixer is attention or GatedDeltaNet including
// its projections and the residual; Shared is the norms, shared expert and
// residual of the MoE block; Route, Read and Compute come from the backend's
// MoE (routing, expert I/O, expert compute).
type Timing struct {
	Embed, Head time.Duration
	Layers      []LayerTiming
	Tokens      int
}

// LayerTiming is one layer's share of a Timing.
type LayerTiming struct {
	Mixer, Shared, Route, Read, Compute time.Duration
	BytesRead                           int64
}

// Session is one sequence's state (KV caches, GatedDeltaNet states, position)
// on a Model. Sessions of the same Model must not run concurrently.
type Session struct {
	m      *Model
	kv     []KVCache
	ds     []DeltaState
	pos    int
	max    int
	bufs   map[int]*scratch
	last   *scratch
	Timing *Timing // when non-nil, Forward adds to it (syncing the backend per step)
	// Hidden, when non-nil, receives the residual stream after each layer
	// (layer = NumHiddenLayers is the final-normed state), [T, hidden].
	Hidden func(layer int, x []float32)
	// Routing, when non-nil, receives each layer's expert choices.
	Routing func(layer int, r *Routing)
}

// NewSession starts an empty sequence of at most the model's MaxContext tokens.
func (m *Model) NewSession() (*Session, error) {
	s := &Session{m: m, max: m.opts.MaxContext, bufs: map[int]*scratch{},
		kv: make([]KVCache, len(m.layers)), ds: make([]DeltaState, len(m.layers))}
	for i, L := range m.layers {
		var err error
		if L.full {
			s.kv[i], err = m.backend.NewKVCache(m.attn, s.max)
		} else {
			s.ds[i], err = m.backend.NewDeltaState(m.delta)
		}
		if err != nil {
			return nil, fmt.Errorf("runtime: layer %d state: %w", i, err)
		}
	}
	return s, nil
}

// Pos is the number of tokens processed so far.
func (s *Session) Pos() int { return s.pos }

// MaxContext is the session's token limit.
func (s *Session) MaxContext() int { return s.max }

// Reset empties the sequence.
func (s *Session) Reset() {
	for i := range s.kv {
		if s.kv[i] != nil {
			s.kv[i].Reset()
		}
		if s.ds[i] != nil {
			s.ds[i].Reset()
		}
	}
	s.pos = 0
}

// scratch is the set of activation tensors for a batch of T tokens.
type scratch struct {
	x, t, mix, moe, sdown          Tensor
	qg, k, v, att                  Tensor
	qkv, z, b, a, dn               Tensor
	sgate, sup, sg                 Tensor
	lastH, logits, logitsT, normed Tensor
}

func (s *Session) scratchFor(T int) (*scratch, error) {
	if sc, ok := s.bufs[T]; ok {
		return sc, nil
	}
	m, be := s.m, s.m.backend
	c := m.Config
	H := c.HiddenSize
	sc := &scratch{}
	var firstErr error
	nt := func(dst *Tensor, rows, cols int) {
		if firstErr != nil || cols <= 0 {
			return
		}
		t, err := be.NewTensor(rows, cols)
		if err != nil {
			firstErr = fmt.Errorf("runtime: allocating [%d,%d] on %s: %w", rows, cols, be.Name(), err)
		}
		*dst = t
	}
	nt(&sc.x, T, H)
	nt(&sc.t, T, H)
	nt(&sc.mix, T, H)
	nt(&sc.moe, T, H)
	nt(&sc.sdown, T, H)
	a, d := m.attn, m.delta
	nt(&sc.qg, T, a.Heads*2*a.HeadDim)
	nt(&sc.k, T, a.KVHeads*a.HeadDim)
	nt(&sc.v, T, a.KVHeads*a.HeadDim)
	nt(&sc.att, T, a.Heads*a.HeadDim)
	nt(&sc.qkv, T, d.ConvDim())
	nt(&sc.z, T, d.ValueHeads*d.ValueDim)
	nt(&sc.b, T, d.ValueHeads)
	nt(&sc.a, T, d.ValueHeads)
	nt(&sc.dn, T, d.ValueHeads*d.ValueDim)
	nt(&sc.sgate, T, c.SharedExpertIntermediateSize)
	nt(&sc.sup, T, c.SharedExpertIntermediateSize)
	nt(&sc.sg, T, 1)
	nt(&sc.normed, T, H)
	if firstErr != nil {
		return nil, firstErr
	}
	s.bufs[T] = sc
	return sc, nil
}

// Forward runs ids through the model at positions Pos()… in batches of the
// model's Batch size. With all it returns logits for every token ([len(ids),
// vocab] row-major), otherwise only for the last token ([vocab]).
func (s *Session) Forward(ctx context.Context, ids []int32, all bool) ([]float32, error) {
	var out []float32
	if all {
		out = make([]float32, 0, len(ids)*s.m.Config.VocabSize)
	}
	last, err := s.forward(ctx, ids, all, func(logits Tensor) error {
		l, err := s.download(logits)
		out = append(out, l...)
		return err
	})
	if err != nil || all {
		return out, err
	}
	return s.download(last)
}

// ForwardGreedy is Forward followed by Argmax over the last token's logits
// (the first limit of them; limit ≤ 0: all). A backend that implements
// Argmaxer finds the maximum itself and the logits are never downloaded.
func (s *Session) ForwardGreedy(ctx context.Context, ids []int32, limit int) (int32, error) {
	last, err := s.forward(ctx, ids, false, nil)
	if err != nil {
		return 0, err
	}
	V := s.m.Config.VocabSize
	if limit <= 0 || limit > V {
		limit = V
	}
	if am, ok := s.m.backend.(Argmaxer); ok {
		i, err := am.Argmax(last, limit)
		if err != nil {
			return 0, fmt.Errorf("runtime: argmax: %w", err)
		}
		return int32(i), nil
	}
	logits, err := s.download(last)
	if err != nil {
		return 0, err
	}
	return int32(Argmax(logits, limit)), nil
}

// forward runs ids in batches. With all, each batch's logits tensor
// ([rows, vocab]) goes to each before the next batch runs and the result is
// nil; otherwise the result holds the last token's logits ([1, vocab]).
func (s *Session) forward(ctx context.Context, ids []int32, all bool, each func(Tensor) error) (Tensor, error) {
	if len(ids) == 0 {
		return nil, fmt.Errorf("runtime: Forward of no tokens")
	}
	if s.pos+len(ids) > s.max {
		return nil, fmt.Errorf("%w: %d tokens after %d exceed the context limit of %d", ErrContext, len(ids), s.pos, s.max)
	}
	V := s.m.Config.VocabSize
	for _, id := range ids {
		if id < 0 || int(id) >= V {
			return nil, fmt.Errorf("runtime: token id %d outside the vocabulary [0,%d)", id, V)
		}
	}
	B := s.m.opts.Batch
	var last Tensor
	for i := 0; i < len(ids); i += B {
		chunk := ids[i:min(i+B, len(ids))]
		lastChunk := i+B >= len(ids)
		logits, err := s.step(ctx, chunk, all, lastChunk)
		if err != nil {
			return nil, err
		}
		if all {
			if err := each(logits); err != nil {
				return nil, err
			}
		} else if lastChunk {
			last = logits
		}
	}
	return last, nil
}

// step runs one batch. It returns the logits tensor of every row (all) or of
// the last row (wantLast), else nil.
func (s *Session) step(ctx context.Context, ids []int32, all, wantLast bool) (Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m, be := s.m, s.m.backend
	c := m.Config
	T := len(ids)
	sc, err := s.scratchFor(T)
	if err != nil {
		return nil, err
	}
	tm := s.Timing
	if tm != nil && len(tm.Layers) != len(m.layers) {
		tm.Layers = make([]LayerTiming, len(m.layers))
	}
	mark := time.Now()
	lap := func(d *time.Duration) error {
		if tm == nil {
			return nil
		}
		if sy, ok := be.(Syncer); ok {
			if err := sy.Sync(); err != nil {
				return err
			}
		}
		now := time.Now()
		*d += now.Sub(mark)
		mark = now
		return nil
	}
	eps := float32(c.RMSNormEps)
	fail := func(layer int, what string, err error) error {
		return fmt.Errorf("runtime: layer %d %s: %w", layer, what, err)
	}
	if err := be.Embed(sc.x, m.embed, ids); err != nil {
		return nil, fmt.Errorf("runtime: embedding: %w", err)
	}
	if tm != nil {
		if err := lap(&tm.Embed); err != nil {
			return nil, err
		}
		tm.Tokens += T
	}
	var routing Routing
	for li := range m.layers {
		L := &m.layers[li]
		if err := be.RMSNorm(sc.t, sc.x, L.inNorm, eps); err != nil {
			return nil, fail(li, "input norm", err)
		}
		if L.full {
			if err := firstErr(
				func() error { return be.MatMul(sc.qg, L.q, sc.t) },
				func() error { return be.MatMul(sc.k, L.k, sc.t) },
				func() error { return be.MatMul(sc.v, L.v, sc.t) },
				func() error { return be.Attention(sc.att, sc.qg, sc.k, sc.v, s.kv[li], L.qNorm, L.kNorm, m.attn) },
				func() error { return be.MatMul(sc.mix, L.o, sc.att) },
			); err != nil {
				return nil, fail(li, "attention", err)
			}
		} else {
			if err := firstErr(
				func() error { return be.MatMul(sc.qkv, L.qkv, sc.t) },
				func() error { return be.MatMul(sc.z, L.z, sc.t) },
				func() error { return be.MatMul(sc.b, L.b, sc.t) },
				func() error { return be.MatMul(sc.a, L.a, sc.t) },
				func() error {
					return be.DeltaNet(sc.dn, sc.qkv, sc.z, sc.b, sc.a, s.ds[li], L.conv, L.dtBias, L.aLog, L.norm, m.delta)
				},
				func() error { return be.MatMul(sc.mix, L.out, sc.dn) },
			); err != nil {
				return nil, fail(li, "linear attention", err)
			}
		}
		if err := be.Add(sc.x, sc.mix); err != nil {
			return nil, fail(li, "residual", err)
		}
		if err := be.RMSNorm(sc.t, sc.x, L.postNorm, eps); err != nil {
			return nil, fail(li, "post-attention norm", err)
		}
		var lt *LayerTiming
		if tm != nil {
			lt = &tm.Layers[li]
			if err := lap(&lt.Mixer); err != nil {
				return nil, err
			}
		}
		routing = Routing{}
		var rp *Routing
		if tm != nil || s.Routing != nil {
			rp = &routing
		}
		p := MoEParams{Layer: li, NumExperts: c.NumExperts, TopK: m.TopK}
		if err := be.MoE(ctx, sc.moe, sc.t, L.router, m.experts, p, rp); err != nil {
			return nil, fail(li, "MoE", err)
		}
		if s.Routing != nil {
			s.Routing(li, &routing)
		}
		if tm != nil {
			var d time.Duration
			if err := lap(&d); err != nil {
				return nil, err
			}
			lt.Route += routing.Route
			lt.Read += routing.Read
			lt.Compute += routing.Compute
			lt.BytesRead += routing.BytesRead
			// Whatever the backend did not attribute counts as compute.
			if rest := d - routing.Route - routing.Read - routing.Compute; rest > 0 {
				lt.Compute += rest
			}
		}
		if L.shGate != nil {
			if err := firstErr(
				func() error { return be.MatMul(sc.sgate, L.shGate, sc.t) },
				func() error { return be.MatMul(sc.sup, L.shUp, sc.t) },
				func() error { return be.SwiGLU(sc.sgate, sc.sgate, sc.sup) },
				func() error { return be.MatMul(sc.sdown, L.shDown, sc.sgate) },
				func() error { return be.MatMul(sc.sg, L.shExpertGate, sc.t) },
				func() error { return be.SigmoidGateAdd(sc.moe, sc.sdown, sc.sg) },
			); err != nil {
				return nil, fail(li, "shared expert", err)
			}
		}
		if err := be.Add(sc.x, sc.moe); err != nil {
			return nil, fail(li, "residual", err)
		}
		if tm != nil {
			if err := lap(&lt.Shared); err != nil {
				return nil, err
			}
		}
		if s.Hidden != nil {
			h, err := s.download(sc.x)
			if err != nil {
				return nil, err
			}
			s.Hidden(li, h)
		}
	}
	s.pos += T
	if !all && !wantLast {
		return nil, nil
	}
	if err := be.RMSNorm(sc.normed, sc.x, m.finalNorm, eps); err != nil {
		return nil, fmt.Errorf("runtime: final norm: %w", err)
	}
	if s.Hidden != nil {
		h, err := s.download(sc.normed)
		if err != nil {
			return nil, err
		}
		s.Hidden(len(m.layers), h)
	}
	var logits Tensor
	if all {
		logits, err = s.head(sc.normed, T, &sc.logitsT)
	} else {
		logits, err = s.lastLogits(sc.normed, T)
	}
	if err != nil {
		return nil, err
	}
	if tm != nil {
		if err := lap(&tm.Head); err != nil {
			return nil, err
		}
	}
	return logits, nil
}

// head computes lm_head over all T rows of h into *buf (allocated on first use).
func (s *Session) head(h Tensor, T int, buf *Tensor) (Tensor, error) {
	be := s.m.backend
	V := s.m.Config.VocabSize
	if *buf == nil {
		t, err := be.NewTensor(T, V)
		if err != nil {
			return nil, fmt.Errorf("runtime: allocating logits: %w", err)
		}
		*buf = t
	}
	if err := be.MatMul(*buf, s.m.lmHead, h); err != nil {
		return nil, fmt.Errorf("runtime: lm_head: %w", err)
	}
	return *buf, nil
}

// lastLogits computes lm_head for the last row of h only.
func (s *Session) lastLogits(h Tensor, T int) (Tensor, error) {
	be := s.m.backend
	if s.last == nil {
		s.last = &scratch{}
		var err error
		if s.last.lastH, err = be.NewTensor(1, s.m.Config.HiddenSize); err != nil {
			return nil, err
		}
	}
	src := h
	if T > 1 {
		all, err := s.download(h)
		if err != nil {
			return nil, err
		}
		Hd := s.m.Config.HiddenSize
		if err := be.Upload(s.last.lastH, all[(T-1)*Hd:]); err != nil {
			return nil, err
		}
		src = s.last.lastH
	}
	return s.head(src, 1, &s.last.logits)
}

func (s *Session) download(t Tensor) ([]float32, error) {
	out := make([]float32, t.Rows()*t.Cols())
	if err := s.m.backend.Download(t, out); err != nil {
		return nil, fmt.Errorf("runtime: download: %w", err)
	}
	return out, nil
}

func firstErr(fns ...func() error) error {
	for _, f := range fns {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}
