package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/runtime/testmodel"
)

func tinyRunModel(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := testmodel.Write(dir, testmodel.Tiny(), testmodel.Options{Seed: 11, Bits: 4}); err != nil {
		t.Fatal(err)
	}
	if err := testmodel.WriteTokenizer(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	app.ErrWriter = &out
	err := app.RunContext(context.Background(), append([]string{"fmoe"}, args...))
	return out.String(), err
}

func TestRunCommand(t *testing.T) {
	dir := tinyRunModel(t)
	out, err := runApp(t, "run", "--model", dir, "--backend", "cpu", "--prompt", "Hello", "--tokens", "8", "--json")
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	var res runResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("run --json output: %v\n%s", err, out)
	}
	if res.PromptTokens != 5 || len(res.IDs) == 0 || len(res.IDs) > 8 || res.Backend != "cpu" {
		t.Fatalf("unexpected result %+v", res)
	}
	for _, id := range res.IDs {
		if id > testmodel.ImEnd+2 { // never a padding row
			t.Fatalf("sampled padding id %d", id)
		}
	}
	// Same seed and options: same tokens, streamed as text.
	out2, err := runApp(t, "run", "--model", dir, "--backend", "auto", "--prompt", "Hello", "--tokens", "8", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res2 runResult
	if err := json.Unmarshal([]byte(out2), &res2); err != nil {
		t.Fatal(err)
	}
	if len(res2.IDs) != len(res.IDs) {
		t.Fatalf("auto backend: %v vs cpu %v", res2.IDs, res.IDs)
	}
	if _, err := runApp(t, "run", "--model", dir, "--backend", "cpu", "--prompt", "Hi", "--chat", "--system", "be brief",
		"--temperature", "0.8", "--top-p", "0.9", "--top-k", "20", "--seed", "3", "--timing", "-k", "3", "--tokens", "4"); err != nil {
		t.Fatalf("run --chat --timing: %v", err)
	}
}

func TestPerplexityAndBenchCommands(t *testing.T) {
	dir := tinyRunModel(t)
	text := filepath.Join(t.TempDir(), "t.txt")
	if err := os.WriteFile(text, []byte("The quick brown fox jumps over the lazy dog."), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runApp(t, "perplexity", "--model", dir, "--backend", "cpu", "--text", text, "--json")
	if err != nil {
		t.Fatalf("perplexity: %v", err)
	}
	var res runtime.PerplexityResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Tokens != 43 || len(res.NLL) != 43 || len(res.Top1) != 43 || !(res.PPL > 1) {
		t.Fatalf("perplexity result %+v", res)
	}
	if out, err := runApp(t, "bench", "--model", dir, "--backend", "cpu", "--tokens", "2"); err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
}

func TestRunBadInput(t *testing.T) {
	dir := tinyRunModel(t)
	cases := []struct {
		name  string
		args  []string
		usage bool
		want  error
	}{
		{"unknown backend", []string{"--backend", "tpu", "--prompt", "x"}, true, nil},
		{"negative tokens", []string{"--tokens", "-1", "--prompt", "x"}, true, nil},
		{"top-p above 1", []string{"--top-p", "2", "--prompt", "x"}, true, nil},
		{"system without chat", []string{"--system", "s", "--prompt", "x"}, true, nil},
		{"prompt over the context", []string{"--ctx", "4", "--prompt", "Hello world"}, false, runtime.ErrContext},
		{"missing 2-bit experts", []string{"--2bit", "--prompt", "x"}, false, runtime.ErrExperts},
		{"missing model", []string{"--prompt", "x", "--model", filepath.Join(dir, "nope")}, true, nil}, // like extract/verify: not a directory = usage
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"run", "--model", dir, "--backend", "cpu"}, c.args...)
			if c.name == "unknown backend" {
				args = append([]string{"run", "--model", dir}, c.args...)
			}
			_, err := runApp(t, args...)
			if err == nil {
				t.Fatal("succeeded")
			}
			var ue usageError
			if c.usage != errors.As(err, &ue) {
				t.Fatalf("usage error = %v: %v", !c.usage, err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
		})
	}
}
