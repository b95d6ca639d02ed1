package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/fmoe/fmoe/runtime"
	"github.com/fmoe/fmoe/tokenizer"
	"github.com/urfave/cli/v2"
)

func perplexityCommand() *cli.Command {
	return &cli.Command{
		Name:      "perplexity",
		Usage:     "teacher-forced negative log-likelihood and perplexity of a text",
		ArgsUsage: " ",
		Description: `Encodes --text (a file), feeds it through the model (at most --ctx tokens) and scores
every next token with log-softmax over the full vocabulary: mean NLL (nats/token) and
perplexity = exp(mean NLL). --json adds the per-position NLL and top-1 ids.

   fmoe perplexity --model out/demo/model --text README.md --ctx 256 --json

` + exitCodesHelp,
		Flags: append(modelFlags(),
			&cli.StringFlag{Name: "text", Aliases: []string{"t"}, Usage: "text file to score", Required: true},
		),
		Before: func(c *cli.Context) error { return checkDir(c.String("model"), "model directory") },
		Action: func(c *cli.Context) error {
			data, err := os.ReadFile(c.String("text"))
			if err != nil {
				return err
			}
			tok, err := tokenizer.LoadDir(c.String("model"))
			if err != nil {
				return err
			}
			m, done, err := openModel(c)
			if err != nil {
				return err
			}
			defer done()
			s, err := m.NewSession()
			if err != nil {
				return err
			}
			var ids []int32
			for _, id := range tok.Encode(string(data)) {
				ids = append(ids, int32(id))
			}
			if len(ids) > s.MaxContext() {
				fmt.Fprintf(os.Stderr, "fmoe: scoring the first %d of %d tokens (--ctx)\n", s.MaxContext(), len(ids))
				ids = ids[:s.MaxContext()]
			}
			if len(ids) < 2 {
				return usagef("%s encodes to %d tokens; need at least 2", c.String("text"), len(ids))
			}
			res, err := s.Perplexity(c.Context, ids, c.Bool("json"))
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				return enc.Encode(struct {
					runtime.PerplexityResult
					IDs     []int32 `json:"ids"`
					Backend string  `json:"backend"`
				}{res, ids, m.Backend().Name()})
			}
			fmt.Fprintf(c.App.Writer, "%d tokens: mean NLL %.4f nats/token, perplexity %.4f\n", res.Tokens, res.MeanNLL, res.PPL)
			return nil
		},
	}
}
