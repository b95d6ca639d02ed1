package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/fmoe/fmoe/cuda"
	"github.com/fmoe/fmoe/metal"
	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/cpu"
	"github.com/fmoe/fmoe/tokenizer"
	"github.com/urfave/cli/v2"
)

// backendCtor builds one kind of backend.
type backendCtor struct {
	name string
	new  func() (runtime.Backend, error)
}

// backendRegistry lists the backends this binary can build, GPU first (the
// order --backend auto tries them). cpu is always last and always works.
func backendRegistry(gpuCacheBytes, hostCacheBytes int64) []backendCtor {
	return []backendCtor{
		{"cuda", func() (runtime.Backend, error) {
			return cuda.NewBackend(cuda.Options{CacheBytes: gpuCacheBytes, HostCacheBytes: hostCacheBytes})
		}},
		{"metal", func() (runtime.Backend, error) { return metal.NewBackend(metal.Options{}) }},
		{"cpu", func() (runtime.Backend, error) { return cpu.New(), nil }},
	}
}

// pickBackend builds the named backend; "auto" tries each in order and
// reports on w why one was skipped.
func pickBackend(name string, reg []backendCtor, w io.Writer) (runtime.Backend, error) {
	var names []string
	for _, c := range reg {
		names = append(names, c.name)
		if name != "auto" && c.name != name {
			continue
		}
		b, err := c.new()
		if err == nil {
			return b, nil
		}
		if name != "auto" {
			return nil, fmt.Errorf("backend %s: %w", name, err)
		}
		fmt.Fprintf(w, "fmoe: backend %s skipped: %s\n", c.name, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return nil, usagef("unknown --backend %q (want auto or one of %s)", name, strings.Join(names, ", "))
}

// modelFlags are the flags shared by run, perplexity and bench.
func modelFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "model directory (model_weights.bin/.json, packed_experts/, tokenizer)", Required: true},
		&cli.StringFlag{Name: "experts", Usage: "expert directory (default MODEL/packed_experts, or packed_experts_2bit with --2bit)"},
		&cli.BoolFlag{Name: "2bit", Usage: "use the 2-bit experts (MODEL/packed_experts_2bit)"},
		&cli.IntFlag{Name: "experts-per-token", Aliases: []string{"k"}, Usage: "routed experts per token (default: the config's num_experts_per_tok)"},
		&cli.StringFlag{Name: "backend", Value: "auto", Usage: "cpu, cuda or auto (GPU when available, else CPU); metal is a placeholder that reports it is not implemented"},
		&cli.IntFlag{Name: "ctx", Usage: "context limit in tokens (default 4096)"},
		&cli.IntFlag{Name: "batch", Usage: "prefill tokens per forward step (default: the backend's, 128 on CUDA, 32 on CPU)"},
		&cli.BoolFlag{Name: "direct-io", Usage: "read experts with O_DIRECT (bypass the page cache; linux, for cold-read measurements)"},
		&cli.Float64Flag{Name: "gpu-cache-gb", Usage: "GPU expert cache budget in GB (cuda; default: what fits)"},
		&cli.Float64Flag{Name: "host-cache-gb", Usage: "pinned host-memory expert tier in GB between the GPU cache and disk (cuda; default none)"},
		&cli.BoolFlag{Name: "json", Usage: "print one JSON object instead of text"},
	}
}

// openModel builds the backend and opens the model from the shared flags.
func openModel(c *cli.Context) (*runtime.Model, func(), error) {
	if c.Int("experts-per-token") < 0 || c.Int("ctx") < 0 || c.Int("batch") < 0 {
		return nil, nil, usagef("--experts-per-token, --ctx and --batch must not be negative")
	}
	be, err := pickBackend(c.String("backend"), backendRegistry(int64(c.Float64("gpu-cache-gb")*(1<<30)), int64(c.Float64("host-cache-gb")*(1<<30))), os.Stderr)
	if err != nil {
		return nil, nil, err
	}
	m, err := runtime.Open(c.Context, c.String("model"), runtime.Options{
		Backend: be, ExpertsDir: c.String("experts"), TwoBit: c.Bool("2bit"),
		ExpertsPerToken: c.Int("experts-per-token"), MaxContext: c.Int("ctx"), Batch: c.Int("batch"),
		DirectIO: c.Bool("direct-io"),
	})
	if err != nil {
		be.Close()
		return nil, nil, err
	}
	return m, func() { m.Close(); be.Close() }, nil
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "generate text, streaming routed experts from disk",
		ArgsUsage: " ",
		Description: `Runs the model in --model on --prompt and streams the generated text to stdout;
prefill and decode speed go to stderr at the end. Stops after --tokens tokens or on an
end token (<|im_end|>, <|endoftext|>, the config's eos ids).

   fmoe run --model out/demo/model --prompt "Hello" --tokens 8
   fmoe run --model ~/models/q35 --chat --prompt "Explain MoE" -k 4 --timing
   fmoe run --model ~/models/q35 --2bit --temperature 0.7 --top-p 0.9 --seed 1 --prompt "Hi"

` + exitCodesHelp,
		Flags: append(modelFlags(),
			&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Usage: "prompt text", Required: true},
			&cli.IntFlag{Name: "tokens", Aliases: []string{"n"}, Value: 64, Usage: "maximum tokens to generate"},
			&cli.BoolFlag{Name: "chat", Usage: "wrap the prompt in the ChatML chat template"},
			&cli.StringFlag{Name: "system", Usage: "system message (with --chat)"},
			&cli.BoolFlag{Name: "think", Usage: "let the model think (with --chat; default: thinking off)"},
			&cli.Float64Flag{Name: "temperature", Usage: "sampling temperature (0 = greedy)"},
			&cli.Float64Flag{Name: "top-p", Usage: "nucleus sampling threshold (0 = off)"},
			&cli.IntFlag{Name: "top-k", Usage: "sample among the k most likely tokens (0 = all)"},
			&cli.Uint64Flag{Name: "seed", Usage: "random seed for sampling"},
			&cli.BoolFlag{Name: "timing", Usage: "print a per-layer time breakdown (mixer, routing, expert I/O, expert compute); on CUDA it reads each layer's routing back and times it with GPU events, without overlapping a token's expert copies with its compute, so decode runs slower with it"},
		),
		Before: func(c *cli.Context) error {
			if c.Int("tokens") < 0 || c.Float64("temperature") < 0 || c.Float64("top-p") < 0 || c.Float64("top-p") > 1 || c.Int("top-k") < 0 {
				return usagef("--tokens, --temperature, --top-k must be >= 0 and --top-p in [0,1]")
			}
			if (c.IsSet("system") || c.Bool("think")) && !c.Bool("chat") {
				return usagef("--system and --think need --chat")
			}
			return checkDir(c.String("model"), "model directory")
		},
		Action: func(c *cli.Context) error { return runRun(c) },
	}
}

type runResult struct {
	Backend         string          `json:"backend"`
	Text            string          `json:"text"`
	PromptIDs       []int32         `json:"prompt_ids"`
	IDs             []int32         `json:"ids"`
	PromptTokens    int             `json:"prompt_tokens"`
	GeneratedTokens int             `json:"generated_tokens"`
	PrefillTokS     float64         `json:"prefill_tok_s"`
	DecodeTokS      float64         `json:"decode_tok_s"`
	Stopped         bool            `json:"stopped_on_eos"`
	ExpertsPerToken int             `json:"experts_per_token"`
	Timing          *runtime.Timing `json:"timing,omitempty"`
	// Experts: the backend's expert-cache counters per tier and per layer
	// (backends implementing runtime.ExpertCounterer).
	Experts *runtime.ExpertCounters `json:"experts,omitempty"`
}

func runRun(c *cli.Context) error {
	ctx := c.Context
	tok, err := tokenizer.LoadDir(c.String("model"))
	if err != nil {
		return err
	}
	m, done, err := openModel(c)
	if err != nil {
		return err
	}
	defer done()
	text := c.String("prompt")
	if c.Bool("chat") {
		text = tokenizer.ChatPrompt(c.String("system"), text, c.Bool("think"))
	}
	var prompt []int32
	for _, id := range tok.Encode(text) {
		prompt = append(prompt, int32(id))
	}
	if len(prompt) == 0 {
		return usagef("the prompt encodes to no tokens")
	}
	s, err := m.NewSession()
	if err != nil {
		return err
	}
	if len(prompt) >= s.MaxContext() {
		return fmt.Errorf("%w: the prompt has %d tokens, the context limit is %d (raise --ctx)", runtime.ErrContext, len(prompt), s.MaxContext())
	}
	if c.Bool("timing") {
		s.Timing = &runtime.Timing{}
	}
	stop := map[int32]bool{}
	for _, id := range m.Config.EOSTokenIDs {
		stop[int32(id)] = true
	}
	for _, id := range tok.EOS() {
		stop[int32(id)] = true
	}
	sm := runtime.NewSampler(runtime.SamplerOptions{Temperature: c.Float64("temperature"), TopK: c.Int("top-k"),
		TopP: c.Float64("top-p"), Seed: c.Uint64("seed"), VocabLimit: min(tok.VocabSize(), m.Config.VocabSize)})
	jsonOut := c.Bool("json")
	out := c.App.Writer
	dec := tok.NewStreamDecoder()
	res := runResult{Backend: m.Backend().Name(), PromptIDs: prompt, ExpertsPerToken: m.TopK}
	var sb strings.Builder
	st, err := s.Generate(ctx, prompt, c.Int("tokens"), sm, stop, func(id int32) error {
		res.IDs = append(res.IDs, id)
		if stop[id] {
			return nil
		}
		piece := dec.Add(int(id))
		sb.WriteString(piece)
		if !jsonOut {
			_, err := io.WriteString(out, piece)
			return err
		}
		return nil
	})
	tail := dec.Flush()
	sb.WriteString(tail)
	if !jsonOut {
		fmt.Fprintln(out, tail)
	}
	if err != nil {
		return err
	}
	res.Text, res.PromptTokens, res.GeneratedTokens = sb.String(), st.PromptTokens, st.GeneratedTokens
	res.PrefillTokS, res.DecodeTokS, res.Stopped = st.PrefillTokS(), st.DecodeTokS(), st.Stopped
	res.Timing = s.Timing
	if ec, ok := m.Backend().(runtime.ExpertCounterer); ok {
		cn := ec.ExpertCounters()
		res.Experts = &cn
	}
	if jsonOut {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintf(os.Stderr, "\n[%s, K=%d] prefill %d tokens in %s (%.2f tok/s), decode %d tokens in %s (%.2f tok/s)\n",
		res.Backend, m.TopK, st.PromptTokens, st.Prefill.Round(time.Millisecond), st.PrefillTokS(),
		st.GeneratedTokens, st.Decode.Round(time.Millisecond), st.DecodeTokS())
	if s.Timing != nil {
		printTiming(os.Stderr, m, s.Timing)
		if res.Experts != nil {
			printCounters(os.Stderr, res.Experts)
		}
	}
	return nil
}

// printCounters writes the expert-cache counters per tier and per layer.
func printCounters(w io.Writer, e *runtime.ExpertCounters) {
	fmt.Fprintf(w, "experts: %d uses, %d GPU hits, %d loads from pinned host memory, %d from disk (GPU cache %d slots, host tier %d), %d read-backs, %d evictions\n",
		e.Uses, e.GPUHits, e.HostLoads, e.DiskLoads, e.GPUSlots, e.HostSlots, e.Syncs, e.Evictions)
	for i, l := range e.Layers {
		if l.Uses > 0 {
			fmt.Fprintf(w, "  layer %2d: %d uses, %d GPU hits, %d host loads, %d disk loads\n", i, l.Uses, l.GPUHits, l.HostLoads, l.DiskLoads)
		}
	}
}

// printTiming writes the per-layer breakdown, in ms per token.
func printTiming(w io.Writer, m *runtime.Model, t *runtime.Timing) {
	if t.Tokens == 0 {
		return
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(t.Tokens) }
	fmt.Fprintf(w, "per-token time over %d tokens (ms):\n%5s %-6s %8s %8s %8s %8s %8s %10s\n", t.Tokens,
		"layer", "kind", "mixer", "route", "io", "compute", "shared", "MB read")
	var tot runtime.LayerTiming
	for i, l := range t.Layers {
		kind := "delta"
		if m.Config.IsFullAttention(i) {
			kind = "attn"
		}
		fmt.Fprintf(w, "%5d %-6s %8.3f %8.3f %8.3f %8.3f %8.3f %10.2f\n", i, kind, per(l.Mixer), per(l.Route),
			per(l.Read), per(l.Compute), per(l.Shared), float64(l.BytesRead)/1e6/float64(t.Tokens))
		tot.Mixer += l.Mixer
		tot.Route += l.Route
		tot.Read += l.Read
		tot.Compute += l.Compute
		tot.Shared += l.Shared
		tot.BytesRead += l.BytesRead
	}
	fmt.Fprintf(w, "%5s %-6s %8.3f %8.3f %8.3f %8.3f %8.3f %10.2f\n", "total", "", per(tot.Mixer), per(tot.Route),
		per(tot.Read), per(tot.Compute), per(tot.Shared), float64(tot.BytesRead)/1e6/float64(t.Tokens))
	fmt.Fprintf(w, "embed %.3f ms, lm_head %.3f ms per token\n", per(t.Embed), per(t.Head))
}
