package main

import (
	"fmt"
	"io"
	"os"
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
