package progress

import "sync/atomic"

// Counter receives amounts of work (bytes) as they complete.
// Implementations must be safe for concurrent use.
type Counter interface{ Add(n int64) }

// Discard is a Counter that ignores everything.
var Discard Counter = discard{}

type discard struct{}

func (discard) Add(int64) {}

// Or returns c, or Discard when c is nil.
func Or(c Counter) Counter {
	if c == nil {
		return Discard
	}
	return c
}

// Sum is a Counter that keeps the running total. The zero value is ready.
type Sum struct{ n atomic.Int64 }

// Add adds n to the total.
func (s *Sum) Add(n int64) { s.n.Add(n) }

// Load returns the total so far.
func (s *Sum) Load() int64 { return s.n.Load() }

// Func adapts a function to a Counter. The function must be safe for
// concurrent use.
type Func func(n int64)

// Add calls f(n).
func (f Func) Add(n int64) { f(n) }

// Tee returns a Counter that forwards every Add to all cs (nil entries are
// skipped).
func Tee(cs ...Counter) Counter {
	var keep multi
	for _, c := range cs {
		if c != nil {
			keep = append(keep, c)
		}
	}
	return keep
}

type multi []Counter

func (m multi) Add(n int64) {
	for _, c := range m {
		c.Add(n)
	}
}
