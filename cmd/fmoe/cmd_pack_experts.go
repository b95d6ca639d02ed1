package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// packExpertsCommand is not implemented yet; its owner replaces this file.
func packExpertsCommand() *cli.Command {
	return &cli.Command{
		Name:   "pack-experts",
		Usage:  "(not implemented yet)",
		Hidden: true,
		Action: func(*cli.Context) error { return errors.New("pack-experts: not implemented yet") },
	}
}
