package runtime

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// SamplerOptions choose the next token from logits. Temperature 0 is greedy
// (argmax). Otherwise logits are divided by Temperature, cut to the TopK most
// likely (0 = all), then to the smallest set whose probability reaches TopP
// (0 or 1 = all), and sampled with a PCG generator seeded by Seed.
type SamplerOptions struct {
	Temperature float64
	TopK        int
	TopP        float64
	Seed        uint64
	// VocabLimit masks ids ≥ VocabLimit (the embedding's padding rows beyond
	// the tokenizer's vocabulary); 0 = no mask.
	VocabLimit int
}

// Sampler picks tokens. It is not safe for concurrent use.
type Sampler struct {
	o   SamplerOptions
	rng *rand.Rand
	idx []int
	p   []float64
}

// NewSampler returns a sampler.
func NewSampler(o SamplerOptions) *Sampler {
	return &Sampler{o: o, rng: rand.New(rand.NewPCG(o.Seed, 0x666d6f65))}
}

// Greedy reports whether the sampler always picks the most likely token.
func (s *Sampler) Greedy() bool { return s.o.Temperature <= 0 }

// Argmax returns the index of the largest of the first n logits (n ≤ 0 = all),
// the lowest index on ties; NaN never wins (0 when all are NaN).
func Argmax(logits []float32, n int) int {
	if n <= 0 || n > len(logits) {
		n = len(logits)
	}
	best := -1
	for i := 0; i < n; i++ {
		v := logits[i]
		if v != v {
			continue
		}
		if best < 0 || v > logits[best] {
			best = i
		}
	}
	return max(best, 0)
}

// Sample returns the next token id.
func (s *Sampler) Sample(logits []float32) int32 {
	n := len(logits)
	if s.o.VocabLimit > 0 && s.o.VocabLimit < n {
		n = s.o.VocabLimit
	}
	if s.o.Temperature <= 0 {
		return int32(Argmax(logits, n))
	}
	s.idx = s.idx[:0]
	for i := 0; i < n; i++ {
		s.idx = append(s.idx, i)
	}
	slices.SortStableFunc(s.idx, func(a, b int) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	if k := s.o.TopK; k > 0 && k < len(s.idx) {
		s.idx = s.idx[:k]
	}
	mx := float64(logits[s.idx[0]])
	s.p = s.p[:0]
	var sum float64
	for _, i := range s.idx {
		e := math.Exp((float64(logits[i]) - mx) / s.o.Temperature)
		s.p = append(s.p, e)
		sum += e
	}
	if tp := s.o.TopP; tp > 0 && tp < 1 {
		var acc float64
		for j, e := range s.p {
			acc += e / sum
			if acc >= tp {
				s.p, s.idx = s.p[:j+1], s.idx[:j+1]
				break
			}
		}
		sum = 0
		for _, e := range s.p {
			sum += e
		}
	}
	r := s.rng.Float64() * sum
	for j, e := range s.p {
		r -= e
		if r < 0 {
			return int32(s.idx[j])
		}
	}
	return int32(s.idx[len(s.idx)-1])
}

// GenerateStats reports the speed of a Generate call.
type GenerateStats struct {
	PromptTokens, GeneratedTokens int
	Prefill, Decode               time.Duration
	Stopped                       bool // an end token was produced
}

// PrefillTokS and DecodeTokS are tokens per second.
func (g GenerateStats) PrefillTokS() float64 { return rate(g.PromptTokens, g.Prefill) }
func (g GenerateStats) DecodeTokS() float64  { return rate(g.GeneratedTokens, g.Decode) }

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Generate feeds prompt and then samples up to maxNew tokens, calling emit
// with each generated id (end tokens included, then it stops). The first
// token is sampled from the prompt's last logits.
func (s *Session) Generate(ctx context.Context, prompt []int32, maxNew int, sm *Sampler, stop map[int32]bool,
	emit func(id int32) error) (GenerateStats, error) {
	st := GenerateStats{PromptTokens: len(prompt)}
	// next runs ids and picks the token after them: greedy decoding asks the
	// backend for the argmax (no logits download where it can), sampling
	// downloads the logits.
	next := func(ids []int32) (int32, error) {
		if sm.Greedy() {
			return s.ForwardGreedy(ctx, ids, sm.o.VocabLimit)
		}
		logits, err := s.Forward(ctx, ids, false)
		if err != nil {
			return 0, err
		}
		return sm.Sample(logits), nil
	}
	t0 := time.Now()
	id, err := next(prompt)
	if err != nil {
		return st, err
	}
	st.Prefill = time.Since(t0)
	t1 := time.Now()
	for st.GeneratedTokens < maxNew {
		st.GeneratedTokens++
		if err := emit(id); err != nil {
			st.Decode = time.Since(t1)
			return st, err
		}
		if stop[id] {
			st.Stopped = true
			break
		}
		if st.GeneratedTokens == maxNew || s.pos >= s.max {
			break
		}
		if id, err = next([]int32{id}); err != nil {
			st.Decode = time.Since(t1)
			return st, err
		}
	}
	st.Decode = time.Since(t1)
	return st, nil
}
