package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// runCommand is not implemented yet; its owner replaces this file.
func runCommand() *cli.Command {
	return &cli.Command{
		Name:   "run",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("run: not implemented yet") },
	}
}
