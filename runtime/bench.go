package runtime

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// BenchResult is the outcome of BenchExperts.
type BenchResult struct {
	Tokens, Layers, TopK int
	Elapsed              time.Duration
	Read, Compute, Route time.Duration
	BytesRead            int64
}

// ExpertsPerSec is routed experts applied per second.
func (r BenchResult) ExpertsPerSec() float64 {
	return float64(r.Tokens*r.Layers*r.TopK) / r.Elapsed.Seconds()
}

// TokPerSec is tokens per second through the routed experts of every layer.
func (r BenchResult) TokPerSec() float64 { return float64(r.Tokens) / r.Elapsed.Seconds() }

// ReadGBs is expert bytes read per second, in GB/s.
func (r BenchResult) ReadGBs() float64 { return float64(r.BytesRead) / 1e9 / r.Elapsed.Seconds() }

// BenchExperts measures expert-only forward throughput (what flash-moe's
// main.m measures): for each of tokens random hidden states, every layer's
// MoE block (routing with the layer's router, expert reads, expert compute),
// nothing else.
func (m *Model) BenchExperts(ctx context.Context, tokens int, seed uint64) (BenchResult, error) {
	res := BenchResult{Tokens: tokens, Layers: len(m.layers), TopK: m.TopK}
	H := m.Config.HiddenSize
	be := m.backend
	x, err := be.NewTensor(1, H)
	if err != nil {
		return res, err
	}
	dst, err := be.NewTensor(1, H)
	if err != nil {
		return res, err
	}
	r := rand.New(rand.NewPCG(seed, 1))
	host := make([]float32, H)
	start := time.Now()
	for t := 0; t < tokens; t++ {
		for li := range m.layers {
			for i := range host {
				host[i] = float32(r.NormFloat64())
			}
			if err := be.Upload(x, host); err != nil {
				return res, err
			}
			var rt Routing
			p := MoEParams{Layer: li, NumExperts: m.Config.NumExperts, TopK: m.TopK}
			if err := be.MoE(ctx, dst, x, m.layers[li].router, m.experts, p, &rt); err != nil {
				return res, fmt.Errorf("runtime: bench layer %d: %w", li, err)
			}
			res.Read += rt.Read
			res.Compute += rt.Compute
			res.Route += rt.Route
			res.BytesRead += rt.BytesRead
		}
	}
	if err := be.Download(dst, host); err != nil { // waits for an asynchronous backend
		return res, err
	}
	res.Elapsed = time.Since(start)
	return res, nil
}
