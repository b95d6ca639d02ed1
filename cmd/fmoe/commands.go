package main

import "github.com/urfave/cli/v2"

// commands lists every verb; each lives in its own cmd_<verb>.go.
func commands() []*cli.Command {
	return []*cli.Command{
		synthCommand(),
		extractCommand(),
		packExpertsCommand(),
		verifyCommand(),
		requantCommand(),
		runCommand(),
		tokenizeCommand(),
		perplexityCommand(),
		benchCommand(),
	}
}
