package main

import (
	"io"
	"os"

	"github.com/fmoe/fmoe/internal/filecopy"
)

// stdio fills in the process's stdout and stderr for nil writers.
func stdio(stdout, stderr io.Writer) (io.Writer, io.Writer) {
	if stdout == nil {
		stdout = os.Stdout
	}
	if stderr == nil {
		stderr = os.Stderr
	}
	return stdout, stderr
}

// checkJobs validates a --jobs value (0 = default).
func checkJobs(n int) error {
	if n < 0 || n > filecopy.MaxJobs {
		return usagef("--jobs %d: want 0-%d", n, filecopy.MaxJobs)
	}
	return nil
}

// checkDir is a usage error unless path is an existing directory; what
// names it in the message ("checkpoint directory", "directory").
func checkDir(path, what string) error {
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		return usagef("%s is not a %s", path, what)
	}
	return nil
}

// firstErr returns the first of errs that is not nil: a command's checks,
// in the order their messages should come.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
