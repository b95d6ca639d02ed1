package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// requantCommand is not implemented yet; its owner replaces this file.
func requantCommand() *cli.Command {
	return &cli.Command{
		Name:   "requant",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("requant: not implemented yet") },
	}
}
