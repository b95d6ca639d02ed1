package cpu

import (
	"errors"
	"fmt"
	"math"
	goruntime "runtime"
	"sync"

	"github.com/fmoe/fmoe/runtime"
)

// ErrShape reports operands whose shapes do not fit the operation.
var ErrShape = errors.New("cpu: shape mismatch")

// Backend is the CPU backend. Create it with New.
type Backend struct {
	workers int
	moe     moeScratch
}

// Options configure the CPU backend.
type Options struct {
	Threads int // worker goroutines for parallel loops; 0 = GOMAXPROCS
}

// New returns a CPU backend using all cores.
func New() *Backend { return NewWithOptions(Options{}) }

// NewWithOptions returns a CPU backend.
func NewWithOptions(o Options) *Backend {
	w := o.Threads
	if w <= 0 {
		w = goruntime.GOMAXPROCS(0)
	}
	return &Backend{workers: w}
}

var _ runtime.Backend = (*Backend)(nil)

// Name implements runtime.Backend.
func (b *Backend) Name() string { return "cpu" }

// Close implements runtime.Backend.
func (b *Backend) Close() error { b.moe = moeScratch{}; return nil }

// tensor is a row-major float32 matrix.
type tensor struct {
	rows, cols int
	d          []float32
}

func (t *tensor) Rows() int { return t.rows }
func (t *tensor) Cols() int { return t.cols }
func (t *tensor) row(i int) []float32 {
	return t.d[i*t.cols : (i+1)*t.cols]
}

// weight aliases host data.
type weight struct {
	name    string
	out, in int
	w       *runtime.WeightData
}

func (w *weight) Out() int { return w.out }
func (w *weight) In() int  { return w.in }

// vec returns a vector weight's values (dense only).
func (w *weight) vec() []float32 { return w.w.F }

func tens(x runtime.Tensor) (*tensor, error) {
	t, ok := x.(*tensor)
	if !ok || t == nil {
		return nil, fmt.Errorf("cpu: tensor %T not from the CPU backend", x)
	}
	return t, nil
}

func wt(x runtime.Weight) (*weight, error) {
	w, ok := x.(*weight)
	if !ok || w == nil {
		return nil, fmt.Errorf("cpu: weight %T not from the CPU backend", x)
	}
	return w, nil
}

// tensorsWeight unwraps two tensors and a weight of this backend.
func tensorsWeight(a, b runtime.Tensor, w runtime.Weight) (*tensor, *tensor, *weight, error) {
	ta, err := tens(a)
	if err != nil {
		return nil, nil, nil, err
	}
	tb, err := tens(b)
	if err != nil {
		return nil, nil, nil, err
	}
	ww, err := wt(w)
	return ta, tb, ww, err
}

// tensors3 unwraps three tensors of this backend.
func tensors3(a, b, c runtime.Tensor) (*tensor, *tensor, *tensor, error) {
	ta, err := tens(a)
	if err != nil {
		return nil, nil, nil, err
	}
	tb, err := tens(b)
	if err != nil {
		return nil, nil, nil, err
	}
	tc, err := tens(c)
	return ta, tb, tc, err
}

// NewTensor implements runtime.Backend.
func (b *Backend) NewTensor(rows, cols int) (runtime.Tensor, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("%w: tensor %dx%d", ErrShape, rows, cols)
	}
	return &tensor{rows: rows, cols: cols, d: make([]float32, rows*cols)}, nil
}

// Upload implements runtime.Backend.
func (b *Backend) Upload(x runtime.Tensor, src []float32) error {
	t, err := tens(x)
	if err != nil {
		return err
	}
	if len(src) != len(t.d) {
		return fmt.Errorf("%w: upload of %d values into %dx%d", ErrShape, len(src), t.rows, t.cols)
	}
	copy(t.d, src)
	return nil
}

// Download implements runtime.Backend.
func (b *Backend) Download(x runtime.Tensor, dst []float32) error {
	t, err := tens(x)
	if err != nil {
		return err
	}
	if len(dst) != len(t.d) {
		return fmt.Errorf("%w: download of %dx%d into %d values", ErrShape, t.rows, t.cols, len(dst))
	}
	copy(dst, t.d)
	return nil
}

// LoadWeight implements runtime.Backend. The weight aliases w's buffers.
func (b *Backend) LoadWeight(w *runtime.WeightData) (runtime.Weight, error) {
	if w == nil || w.Out <= 0 || w.In <= 0 {
		return nil, fmt.Errorf("%w: weight %v", ErrShape, w)
	}
	switch {
	case w.Q != nil:
		if err := w.Q.Validate(); err != nil {
			return nil, fmt.Errorf("cpu: weight %s: %w", w.Name, err)
		}
		if w.Q.Rows != w.Out || w.Q.Cols != w.In {
			return nil, fmt.Errorf("%w: weight %s is %dx%d, quantized matrix %dx%d", ErrShape, w.Name, w.Out, w.In, w.Q.Rows, w.Q.Cols)
		}
	case len(w.F) != w.Out*w.In:
		return nil, fmt.Errorf("%w: weight %s has %d values for %dx%d", ErrShape, w.Name, len(w.F), w.Out, w.In)
	}
	return &weight{name: w.Name, out: w.Out, in: w.In, w: w}, nil
}

// Embed implements runtime.Backend.
func (b *Backend) Embed(dst runtime.Tensor, table runtime.Weight, ids []int32) error {
	d, err := tens(dst)
	if err != nil {
		return err
	}
	w, err := wt(table)
	if err != nil {
		return err
	}
	if d.rows != len(ids) || d.cols != w.in {
		return fmt.Errorf("%w: embed %d ids of width %d into %dx%d", ErrShape, len(ids), w.in, d.rows, d.cols)
	}
	for _, id := range ids {
		if id < 0 || int(id) >= w.out {
			return fmt.Errorf("%w: token id %d outside the %d-row table %s", ErrShape, id, w.out, w.name)
		}
	}
	for i, id := range ids {
		if w.w.Q != nil {
			w.w.Q.DequantizeRow(d.row(i), int(id))
		} else {
			copy(d.row(i), w.w.F[int(id)*w.in:(int(id)+1)*w.in])
		}
	}
	return nil
}

// MatMul implements runtime.Backend.
func (b *Backend) MatMul(dst runtime.Tensor, wgt runtime.Weight, x runtime.Tensor) error {
	d, xt, w, err := tensorsWeight(dst, x, wgt)
	if err != nil {
		return err
	}
	if xt.cols != w.in || d.cols != w.out || d.rows != xt.rows {
		return fmt.Errorf("%w: matmul %s [%d,%d] · x[%d,%d] -> [%d,%d]", ErrShape, w.name, w.out, w.in, xt.rows, xt.cols, d.rows, d.cols)
	}
	b.matmul(d.d, w.w, xt.d, xt.rows)
	return nil
}

// RMSNorm implements runtime.Backend.
func (b *Backend) RMSNorm(dst, x runtime.Tensor, wgt runtime.Weight, eps float32) error {
	d, xt, w, err := tensorsWeight(dst, x, wgt)
	if err != nil {
		return err
	}
	n := w.in
	if w.out != 1 || w.w.F == nil || d.rows != xt.rows || d.cols != xt.cols || xt.cols%n != 0 {
		return fmt.Errorf("%w: rmsnorm of [%d,%d] with weight %s [%d,%d]", ErrShape, xt.rows, xt.cols, w.name, w.out, w.in)
	}
	rmsNorm(d.d, xt.d, w.vec(), eps)
	return nil
}

// rmsNorm normalises every len(w) group of x into dst (dst may be x).
func rmsNorm(dst, x, w []float32, eps float32) {
	n := len(w)
	for g := 0; g+n <= len(x); g += n {
		var ss float64
		for _, v := range x[g : g+n] {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(n)+float64(eps)))
		for i := 0; i < n; i++ {
			dst[g+i] = x[g+i] * inv * w[i]
		}
	}
}

func sameShape(ts ...*tensor) bool {
	for _, t := range ts[1:] {
		if t.rows != ts[0].rows || t.cols != ts[0].cols {
			return false
		}
	}
	return true
}

// Add implements runtime.Backend.
func (b *Backend) Add(dst, x runtime.Tensor) error {
	d, err := tens(dst)
	if err != nil {
		return err
	}
	xt, err := tens(x)
	if err != nil {
		return err
	}
	if !sameShape(d, xt) {
		return fmt.Errorf("%w: add [%d,%d] += [%d,%d]", ErrShape, d.rows, d.cols, xt.rows, xt.cols)
	}
	for i, v := range xt.d {
		d.d[i] += v
	}
	return nil
}

func sigmoid32(v float32) float32 { return float32(1 / (1 + math.Exp(-float64(v)))) }
func silu32(v float32) float32    { return v * sigmoid32(v) }

// SwiGLU implements runtime.Backend.
func (b *Backend) SwiGLU(dst, gate, up runtime.Tensor) error {
	d, g, u, err := tensors3(dst, gate, up)
	if err != nil {
		return err
	}
	if !sameShape(d, g, u) {
		return fmt.Errorf("%w: swiglu shapes differ", ErrShape)
	}
	swiglu(d.d, g.d, u.d)
	return nil
}

func swiglu(dst, g, u []float32) {
	for i := range dst {
		dst[i] = silu32(g[i]) * u[i]
	}
}

// SigmoidGateAdd implements runtime.Backend.
func (b *Backend) SigmoidGateAdd(dst, x, gate runtime.Tensor) error {
	d, xt, g, err := tensors3(dst, x, gate)
	if err != nil {
		return err
	}
	if !sameShape(d, xt) || g.rows != d.rows || g.cols != 1 {
		return fmt.Errorf("%w: sigmoid-gate-add [%d,%d] += σ([%d,%d])·[%d,%d]", ErrShape, d.rows, d.cols, g.rows, g.cols, xt.rows, xt.cols)
	}
	for t := 0; t < d.rows; t++ {
		s := sigmoid32(g.d[t])
		dr, xr := d.row(t), xt.row(t)
		for i := range dr {
			dr[i] += s * xr[i]
		}
	}
	return nil
}

// parallel runs fn over [0,n) split into contiguous chunks on the workers.
func (b *Backend) parallel(n int, fn func(lo, hi int)) {
	w := min(b.workers, n)
	if w <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + w - 1) / w
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}
