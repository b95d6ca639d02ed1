package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/fmoe/fmoe/tokenizer"
)

// tokenizeOptions are the command line of `fmoe tokenize`.
type tokenizeOptions struct {
	model    string
	text     string // "-" = stdin
	idsOnly  bool
	json     bool
	chat     bool
	system   string
	noThink  bool
	decodeID bool
}

func tokenizeCommand() *cli.Command {
	var o tokenizeOptions
	var flags []cli.Flag
	flags = []cli.Flag{
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "model `DIR` holding tokenizer.json or tokenizer.bin (required)", Destination: &o.model},
		&cli.BoolFlag{Name: "ids", Usage: "print only the JSON array of ids", Destination: &o.idsOnly},
		&cli.BoolFlag{Name: "json", Usage: "print ids and tokens as one JSON object", Destination: &o.json},
		&cli.BoolFlag{Name: "chat", Usage: "wrap the text in the chat template (user turn + assistant prompt)", Destination: &o.chat},
		&cli.StringFlag{Name: "system", Usage: "system message for --chat", Destination: &o.system},
		&cli.BoolFlag{Name: "no-think", Usage: "with --chat: thinking off (empty <think></think> block)", Destination: &o.noThink},
		&cli.BoolFlag{Name: "decode", Usage: "the argument is a list of ids to decode", Destination: &o.decodeID},
	}
	return &cli.Command{
		Name:      "tokenize",
		Usage:     "print the token ids and pieces of a text, as the model's tokenizer encodes it",
		ArgsUsage: `"text" | -`,
		Description: `Encodes the text with the model directory's tokenizer (tokenizer.json, else
tokenizer.bin) exactly as Hugging Face tokenizers does (add_special_tokens=False:
no BOS; "<|im_start|>", "<think>" and the other added tokens typed in the text
become single ids). "-" reads the text from stdin.

Output: the ids as a JSON array on the first line, then one line per token:
id, the token as tokenizer.json spells it, and its text (Go-quoted; bytes of a
character split across tokens show as \x..). --ids prints only the array;
--json prints {"ids": [...], "tokens": [{"id", "token", "text"}]}.
--decode takes space- or comma-separated ids instead of text and prints their
decoded text.

EXAMPLES:
   fmoe tokenize --model model "Hello, world!"
   echo "你好" | fmoe tokenize --model model --ids -
   fmoe tokenize --model model --chat --system "Be brief." "What is 2+2?"
   fmoe tokenize --model model --decode "9707, 11, 1879"
   fmoe tokenize --model model -- "-1 starts with a dash"

` + exitCodesHelp,
		Flags: flags,
		Before: func(c *cli.Context) error {
			// Flags may follow the text (fmoe tokenize "text" --ids); a text
			// that starts with "-" goes after "--".
			arg, err := oneArg(c, flags, "tokenize takes one text argument or - for stdin")
			if err != nil {
				return err
			}
			o.text = arg
			if o.model == "" {
				return usagef("tokenize needs --model DIR")
			}
			if o.idsOnly && o.json {
				return usagef("--ids and --json exclude each other")
			}
			if (o.system != "" || o.noThink) && !o.chat {
				return usagef("--system and --no-think need --chat")
			}
			if o.decodeID && o.chat {
				return usagef("--decode and --chat exclude each other")
			}
			return nil
		},
		Action: func(c *cli.Context) error {
			stdout := c.App.Writer
			if stdout == nil {
				stdout = os.Stdout
			}
			return runTokenize(&o, os.Stdin, stdout)
		},
	}
}

type tokenizeToken struct {
	ID    int    `json:"id"`
	Token string `json:"token"`
	Text  string `json:"text"`
}

// runTokenize loads the tokenizer, encodes (or decodes) and prints.
func runTokenize(o *tokenizeOptions, stdin io.Reader, stdout io.Writer) error {
	text := o.text
	if text == "-" {
		b, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("reading stdin: %w", err)
		}
		text = string(b)
	}
	tok, err := tokenizer.LoadDir(o.model)
	if err != nil {
		return err
	}
	if o.decodeID {
		ids, err := parseIDs(text)
		if err != nil {
			return usageError{err}
		}
		_, err = fmt.Fprintln(stdout, tok.Decode(ids))
		return err
	}
	if o.chat {
		text = tokenizer.ChatPrompt(o.system, text, !o.noThink)
	}
	ids := tok.Encode(text)
	if ids == nil {
		ids = []int{}
	}
	idsJSON, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if o.idsOnly {
		_, err := fmt.Fprintf(stdout, "%s\n", idsJSON)
		return err
	}
	tokens := make([]tokenizeToken, len(ids))
	for i, id := range ids {
		s, _ := tok.Token(id)
		tokens[i] = tokenizeToken{ID: id, Token: s, Text: strings.ToValidUTF8(string(tok.TokenBytes(id)), "\uFFFD")}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(struct {
			IDs    []int           `json:"ids"`
			Tokens []tokenizeToken `json:"tokens"`
		}{ids, tokens})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", idsJSON)
	for _, t := range tokens {
		fmt.Fprintf(&b, "%8d  %-20s %q\n", t.ID, t.Token, tok.TokenBytes(t.ID))
	}
	fmt.Fprintf(&b, "%d tokens\n", len(ids))
	_, err = io.WriteString(stdout, b.String())
	return err
}

// parseIDs reads ids separated by spaces and/or commas, with optional
// surrounding brackets (a JSON array works).
func parseIDs(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	var ids []int
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		id, err := strconv.Atoi(f)
		if err != nil || id < 0 {
			return nil, fmt.Errorf("--decode: %q is not a token id", f)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
