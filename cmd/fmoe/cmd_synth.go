package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// synthCommand is not implemented yet; its owner replaces this file.
func synthCommand() *cli.Command {
	return &cli.Command{
		Name:   "synth",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("synth: not implemented yet") },
	}
}
