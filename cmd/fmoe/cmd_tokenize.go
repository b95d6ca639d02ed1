package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// tokenizeCommand is not implemented yet; its owner replaces this file.
func tokenizeCommand() *cli.Command {
	return &cli.Command{
		Name:   "tokenize",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("tokenize: not implemented yet") },
	}
}
