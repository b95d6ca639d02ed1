package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func tinyTokenizerDir(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../testdata/tokenizer/tiny_tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTokenize(t *testing.T) {
	dir := tinyTokenizerDir(t)
	var out bytes.Buffer
	// "the" has no merge for "th" in the tiny tokenizer; " the" does (Ġt + he).
	if err := runTokenize(&tokenizeOptions{model: dir, text: "-", json: true}, strings.NewReader("a the<think>"), &out); err != nil {
		t.Fatal(err)
	}
	var res struct {
		IDs    []int
		Tokens []tokenizeToken
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	if want := []int{'a', 258, 302}; !slices.Equal(res.IDs, want) {
		t.Errorf("ids %v, want %v", res.IDs, want)
	}
	if len(res.Tokens) != 3 || res.Tokens[1].Token != "Ġthe" || res.Tokens[1].Text != " the" || res.Tokens[2].Text != "<think>" {
		t.Errorf("tokens %+v", res.Tokens)
	}

	out.Reset()
	if err := runTokenize(&tokenizeOptions{model: dir, text: "97, 258 [302]", decodeID: true}, nil, &out); err == nil {
		t.Error("bad id list accepted")
	} else if !errors.As(err, new(usageError)) {
		t.Errorf("bad id list: err = %v, want a usage error", err)
	}
	if err := runTokenize(&tokenizeOptions{model: dir, text: "[97, 258,302]", decodeID: true}, nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "a the<think>\n" {
		t.Errorf("decode printed %q", out.String())
	}

	out.Reset()
	if err := runTokenize(&tokenizeOptions{model: dir, text: "", idsOnly: true}, nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "[]\n" {
		t.Errorf("empty text printed %q", out.String())
	}
}

func TestTokenizeUsage(t *testing.T) {
	dir := tinyTokenizerDir(t)
	for _, args := range [][]string{
		{"tokenize", "x"},
		{"tokenize", "--model", dir},
		{"tokenize", "--model", dir, "a", "b"},
		{"tokenize", "--model", dir, "--ids", "--json", "x"},
		{"tokenize", "--model", dir, "--system", "s", "x"},
	} {
		app := newApp()
		app.Writer = new(bytes.Buffer)
		app.ErrWriter = new(bytes.Buffer)
		err := app.Run(append([]string{"fmoe"}, args...))
		if !errors.As(err, new(usageError)) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	if err := app.Run([]string{"fmoe", "tokenize", "--model", dir, "a the", "--ids"}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "[97,258]\n" {
		t.Errorf("flags after the text: printed %q", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		t.Fatal(err)
	}
	missing := t.TempDir()
	app = newApp()
	app.Writer = new(bytes.Buffer)
	if err := app.Run([]string{"fmoe", "tokenize", "--model", missing, "x"}); err == nil || errors.As(err, new(usageError)) {
		t.Errorf("missing tokenizer: err = %v, want a plain failure", err)
	}
}
