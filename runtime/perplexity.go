package runtime

import (
	"context"
	"fmt"
	"math"
)

// PerplexityResult is teacher-forced scoring of a token sequence.
type PerplexityResult struct {
	Tokens  int       `json:"tokens"`   // tokens scored (len(ids)-1)
	MeanNLL float64   `json:"mean_nll"` // nats per token
	PPL     float64   `json:"perplexity"`
	NLL     []float64 `json:"nll,omitempty"`  // per predicted position (token i+1 given 0..i)
	Top1    []int32   `json:"top1,omitempty"` // argmax at each position
}

// Perplexity runs ids through a fresh sequence and scores each next token
// with log-softmax over the full vocabulary (the quantity HF computes from
// its logits). perPosition keeps the per-position NLL and top-1 ids.
func (s *Session) Perplexity(ctx context.Context, ids []int32, perPosition bool) (PerplexityResult, error) {
	var res PerplexityResult
	if len(ids) < 2 {
		return res, fmt.Errorf("runtime: perplexity needs at least 2 tokens, got %d", len(ids))
	}
	s.Reset()
	V := s.m.Config.VocabSize
	B := s.m.opts.Batch
	var sum float64
	for i := 0; i < len(ids)-1; i += B {
		end := min(i+B, len(ids)-1)
		logits, err := s.Forward(ctx, ids[i:end], true)
		if err != nil {
			return res, err
		}
		for p := i; p < end; p++ {
			row := logits[(p-i)*V : (p-i+1)*V]
			nll := -logSoftmaxAt(row, int(ids[p+1]))
			sum += nll
			if perPosition {
				res.NLL = append(res.NLL, nll)
				res.Top1 = append(res.Top1, int32(Argmax(row, 0)))
			}
		}
	}
	res.Tokens = len(ids) - 1
	res.MeanNLL = sum / float64(res.Tokens)
	res.PPL = math.Exp(res.MeanNLL)
	return res, nil
}

func logSoftmaxAt(row []float32, i int) float64 {
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - mx)
	}
	return float64(row[i]) - mx - math.Log(s)
}
