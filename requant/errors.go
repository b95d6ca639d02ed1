package requant

import "errors"

// Sentinel errors; every error returned by this package wraps one of them
// (or a context error) and names the file involved.
var (
	ErrUsage    = errors.New("requant: bad options")
	ErrShape    = errors.New("requant: shapes do not match")
	ErrLayout   = errors.New("requant: bad or missing layout.json")
	ErrNot4Bit  = errors.New("requant: input is not 4-bit")
	ErrSize     = errors.New("requant: expert file has the wrong size")
	ErrOutput   = errors.New("requant: output directory conflicts with the input")
	ErrChecksum = errors.New("requant: checksum manifest")
)
