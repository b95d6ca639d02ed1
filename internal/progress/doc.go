// Package progress lets long-running library code report how many bytes it
// has processed without knowing how (or whether) the progress is shown.
// Library functions take a Counter; the CLI passes a progress bar, tests pass
// a Sum or Discard.
package progress
