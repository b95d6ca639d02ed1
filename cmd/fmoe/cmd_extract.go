package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// extractCommand is not implemented yet; its owner replaces this file.
func extractCommand() *cli.Command {
	return &cli.Command{
		Name:   "extract",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("extract: not implemented yet") },
	}
}
