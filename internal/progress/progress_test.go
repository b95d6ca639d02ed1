package progress_test

import (
	"sync"
	"testing"

	"github.com/fmoe/fmoe/internal/progress"
)

func TestSumConcurrent(t *testing.T) {
	var s progress.Sum
	var calls progress.Sum
	c := progress.Tee(&s, nil, progress.Func(func(int64) { calls.Add(1) }), progress.Or(nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Add(int64(i))
			}
		}()
	}
	wg.Wait()
	if got, want := s.Load(), int64(1000*(0+1+2+3+4+5+6+7)); got != want {
		t.Errorf("sum %d, want %d", got, want)
	}
	if calls.Load() != 8000 {
		t.Errorf("Func called %d times, want 8000", calls.Load())
	}
	progress.Discard.Add(5)
}
