package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/fmoe/fmoe/internal/progress"
)

// stage shows the progress of one stage of work on stderr: a progress bar
// with bytes and GB/s when stderr is a terminal, one line when the stage
// ends otherwise, nothing when silent (--quiet, --json). It is a
// progress.Counter and always keeps the total for the summary.
type stage struct {
	name   string
	total  int64
	start  time.Time
	sum    progress.Sum
	bar    *progressbar.ProgressBar
	w      io.Writer
	silent bool
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// startStage begins a stage of total bytes.
func startStage(w io.Writer, name string, total int64, silent bool) *stage {
	if w == nil {
		w = os.Stderr
	}
	s := &stage{name: name, total: total, start: time.Now(), w: w, silent: silent}
	if !silent && isTerminal(w) {
		s.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(name),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionUseIECUnits(false),
		)
	}
	return s
}

// Add counts n bytes.
func (s *stage) Add(n int64) {
	s.sum.Add(n)
	if s.bar != nil {
		s.bar.Add64(n)
	}
}

// Done ends the stage: clears the bar, or prints the stage's line.
func (s *stage) Done() {
	if s.bar != nil {
		s.bar.Finish()
	}
	if !s.silent {
		fmt.Fprintf(s.w, "%s: %s\n", s.name, rate(s.sum.Load(), time.Since(s.start)))
	}
}

// rate formats "1.23 GB in 4.5 s (0.27 GB/s)".
func rate(bytes int64, d time.Duration) string {
	secs := max(d.Seconds(), 1e-9)
	return fmt.Sprintf("%s in %.2f s (%.2f GB/s)", humanBytes(bytes), d.Seconds(), float64(bytes)/1e9/secs)
}

// humanBytes formats a byte count in decimal units.
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// startProgressLine redraws "stage: x / y GB (z GB/s)" on stderr twice a
// second while work runs, only when stderr is a terminal and not silenced.
// It returns a function that stops and clears the line.
func startProgressLine(w io.Writer, stage string, total int64, done *progress.Sum, silent bool) func() {
	f, ok := w.(*os.File)
	if silent || !ok {
		return func() {}
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return func() {}
	}
	var stopped atomic.Bool
	quit := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				fmt.Fprint(f, "\r\033[K")
				return
			case <-t.C:
				n := done.Load()
				fmt.Fprintf(f, "\r\033[K%s: %.2f / %.2f GB (%.0f%%, %.2f GB/s)", stage, float64(n)/1e9, float64(total)/1e9,
					100*float64(n)/float64(max(total, 1)), float64(n)/1e9/time.Since(start).Seconds())
			}
		}
	}()
	return func() {
		if stopped.CompareAndSwap(false, true) {
			close(quit)
			<-finished
		}
	}
}
