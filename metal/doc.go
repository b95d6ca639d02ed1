// Package metal is the placeholder for an Apple GPU backend. fmoe has no
// Metal implementation yet: NewBackend always returns an error wrapping
// ErrNotSupported (on macOS: not implemented; elsewhere: no Metal), so
// `--backend auto` skips it with a reason and everything builds everywhere.
package metal
