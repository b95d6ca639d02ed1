package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// benchCommand is not implemented yet; its owner replaces this file.
func benchCommand() *cli.Command {
	return &cli.Command{
		Name:   "bench",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("bench: not implemented yet") },
	}
}
