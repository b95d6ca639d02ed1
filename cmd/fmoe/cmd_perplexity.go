package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// perplexityCommand is not implemented yet; its owner replaces this file.
func perplexityCommand() *cli.Command {
	return &cli.Command{
		Name:   "perplexity",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("perplexity: not implemented yet") },
	}
}
