package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// verifyCommand is not implemented yet; its owner replaces this file.
func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:   "verify",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("verify: not implemented yet") },
	}
}
