package cpu

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/fmoe/fmoe/quant"
	"github.com/fmoe/fmoe/runtime"
)

// bufAlign is the alignment of expert buffers (page size; O_DIRECT needs it).
const bufAlign = 4096

// moeScratch holds the buffers reused across MoE calls.
type moeScratch struct {
	bufs [2][][]byte // two sets: one being read while the other is computed
	size int64
	f32  [3][]float32 // gate, up and expert outputs of a part
}

// alignedBuf returns a zeroed slice of n bytes whose start is bufAlign-aligned
// and whose capacity is n rounded up to bufAlign.
func alignedBuf(n int64) []byte {
	c := (n + bufAlign - 1) / bufAlign * bufAlign // capacity rounded for O_DIRECT reads
	raw := make([]byte, c+bufAlign)
	off := 0
	if r := int(uintptrOf(raw) % bufAlign); r != 0 {
		off = bufAlign - r
	}
	return raw[off : off+int(n) : off+int(c)]
}

// floats returns float32 scratch buffer i with n elements (contents
// undefined), reused across calls.
func (s *moeScratch) floats(i, n int) []float32 {
	if cap(s.f32[i]) < n {
		s.f32[i] = make([]float32, n)
	}
	return s.f32[i][:n]
}

// buffers returns set i with at least n buffers of the layout's size.
func (s *moeScratch) buffers(i, n int, size int64) [][]byte {
	if s.size != size {
		s.bufs = [2][][]byte{}
		s.size = size
	}
	for len(s.bufs[i]) < n {
		s.bufs[i] = append(s.bufs[i], alignedBuf(size))
	}
	return s.bufs[i][:n]
}

// chunkExperts is how many experts are read per I/O batch.
func chunkExperts(topK int) int { return max(topK, 8) }

// MoE implements runtime.Backend.
func (b *Backend) MoE(ctx context.Context, dst, x runtime.Tensor, router runtime.Weight, src runtime.ExpertSource, p runtime.MoEParams, routing *runtime.Routing) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, xt, rw, err := tensorsWeight(dst, x, router)
	if err != nil {
		return err
	}
	lay := src.Layout()
	T, H, E, K := xt.rows, xt.cols, p.NumExperts, p.TopK
	if rw.out != E || rw.in != H || d.rows != T || d.cols != H || lay.Hidden != H || K <= 0 || K > E {
		return fmt.Errorf("%w: MoE x[%d,%d] router [%d,%d] experts %d top-%d hidden %d", ErrShape, T, H, rw.out, rw.in, E, K, lay.Hidden)
	}
	if err := lay.Validate(); err != nil {
		return err
	}

	// Route.
	t0 := time.Now()
	logits := make([]float32, T*E)
	b.matmul(logits, rw.w, xt.d, T)
	ids, weights := route(logits, T, E, K)
	if routing != nil {
		routing.Experts, routing.Weights = ids, weights
	}
	// Group tokens by expert, ascending expert id (HF accumulates in this order).
	users := make([][]use, E)
	for t := 0; t < T; t++ {
		for i, e := range ids[t] {
			users[e] = append(users[e], use{tok: t, w: weights[t][i]})
		}
	}
	var need []int
	for e := range users {
		if len(users[e]) > 0 {
			need = append(need, e)
		}
	}
	t1 := time.Now()

	clear(d.d)
	chunk := chunkExperts(K)
	var readTime, computeTime time.Duration
	type result struct {
		err error
		dur time.Duration
	}
	read := func(set int, part []int) <-chan result {
		ch := make(chan result, 1)
		bufs := b.moe.buffers(set, len(part), lay.Size)
		go func() {
			s := time.Now()
			err := src.ReadExperts(ctx, p.Layer, part, bufs)
			ch <- result{err, time.Since(s)}
		}()
		return ch
	}
	// Pre-size both buffer sets before any goroutine uses them.
	b.moe.buffers(0, min(chunk, len(need)), lay.Size)
	b.moe.buffers(1, min(chunk, len(need)), lay.Size)
	xs := make([]float32, T*H)
	// Rows of the expert products of one part (its experts' tokens, see expertsForward).
	rowsMax := min(T*K, chunk*T)
	gate := b.moe.floats(0, rowsMax*lay.Intermediate)
	up := b.moe.floats(1, rowsMax*lay.Intermediate)
	ys := b.moe.floats(2, rowsMax*H)

	var pending <-chan result
	if len(need) > 0 {
		pending = read(0, need[:min(chunk, len(need))])
	}
	for c, set := 0, 0; c < len(need); c, set = c+chunk, 1-set {
		part := need[c:min(c+chunk, len(need))]
		w := time.Now()
		res := <-pending
		readTime += time.Since(w)
		if res.err != nil {
			return fmt.Errorf("cpu: MoE layer %d: reading experts %v: %w", p.Layer, part, res.err)
		}
		if next := c + chunk; next < len(need) {
			pending = read(1-set, need[next:min(next+chunk, len(need))])
		}
		cs := time.Now()
		bufs := b.moe.bufs[set]
		if err := b.expertsForward(lay, bufs, part, users, xt, xs, gate, up, ys); err != nil {
			return fmt.Errorf("cpu: MoE layer %d: %w", p.Layer, err)
		}
		for _, e := range part {
			for _, u := range users[e] {
				dr := d.row(u.tok)
				for k, v := range ys[u.row*H : (u.row+1)*H] {
					dr[k] += u.w * v
				}
			}
		}
		computeTime += time.Since(cs)
		if err := ctx.Err(); err != nil {
			if pending != nil && c+chunk < len(need) {
				<-pending
			}
			return err
		}
	}
	if routing != nil {
		routing.Route += t1.Sub(t0)
		routing.Read += readTime
		routing.Compute += computeTime
		routing.BytesRead += int64(len(need)) * lay.Size
	}
	return nil
}

// use is one token routed to an expert: its row in x and dst, its routing
// weight, and its row in the expert outputs of the current part.
type use struct {
	tok int
	w   float32
	row int
}

// expertsForward computes the SwiGLU output of each expert of part
// (buffers bufs) for its users into ys, user u of an expert at row u.row
// (set here: consecutive per expert, in part order). Experts with one token
// (every expert of a decode step) go through two MatVecBatch calls, one for
// all their gate and up projections and one for all their down projections,
// so the cores share K experts' work instead of splitting each matrix;
// experts with several tokens use the prefill product. Results are the same
// bits either way.
func (b *Backend) expertsForward(lay runtime.ExpertLayout, bufs [][]byte, part []int, users [][]use,
	xt *tensor, xs, gate, up, ys []float32) error {
	H, I := lay.Hidden, lay.Intermediate
	mats := make([][3]*quant.Matrix, len(part))
	var gu, dn []quant.MatVecJob
	row := 0
	for i, e := range part {
		m, err := expertMatrices(lay, bufs[i])
		if err != nil {
			return fmt.Errorf("expert %d: %w", e, err)
		}
		mats[i] = m
		us := users[e]
		for j := range us {
			us[j].row = row + j
		}
		n := len(us)
		g, u := gate[row*I:(row+n)*I], up[row*I:(row+n)*I]
		if n == 1 {
			x := xt.row(us[0].tok)
			gu = append(gu, quant.MatVecJob{Dst: g, M: m[0], X: x}, quant.MatVecJob{Dst: u, M: m[1], X: x})
		} else {
			for j, u := range us {
				copy(xs[j*H:(j+1)*H], xt.row(u.tok))
			}
			quant.MatMul(g, m[0], xs[:n*H], n)
			quant.MatMul(u, m[1], xs[:n*H], n)
		}
		row += n
	}
	quant.MatVecBatch(gu)
	swiglu(gate[:row*I], gate[:row*I], up[:row*I])
	row = 0
	for i, e := range part {
		n := len(users[e])
		g, y := gate[row*I:(row+n)*I], ys[row*H:(row+n)*H]
		if n == 1 {
			dn = append(dn, quant.MatVecJob{Dst: y, M: mats[i][2], X: g})
		} else {
			quant.MatMul(y, mats[i][2], g, n)
		}
		row += n
	}
	quant.MatVecBatch(dn)
	return nil
}

func expertMatrices(l runtime.ExpertLayout, buf []byte) ([3]*quant.Matrix, error) {
	var out [3]*quant.Matrix
	for i, p := range []runtime.ProjLayout{l.Gate, l.Up, l.Down} {
		m, err := p.Matrix(buf, l.GroupSize)
		if err != nil {
			return out, err
		}
		out[i] = m
	}
	return out, nil
}

// route applies softmax over each token's logits (float64), selects the
// top-K (descending probability, ties to the lower id) and renormalises.
func route(logits []float32, T, E, K int) ([][]int, [][]float32) {
	ids := make([][]int, T)
	ws := make([][]float32, T)
	p := make([]float64, E)
	taken := make([]bool, E)
	for t := 0; t < T; t++ {
		l := logits[t*E : (t+1)*E]
		mx := math.Inf(-1)
		for _, v := range l {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for e, v := range l {
			p[e] = math.Exp(float64(v) - mx)
			sum += p[e]
		}
		clear(taken)
		sel := make([]int, K)
		var tot float64
		for k := 0; k < K; k++ {
			best := -1
			for e := 0; e < E; e++ {
				if !taken[e] && (best < 0 || p[e] > p[best]) {
					best = e
				}
			}
			taken[best] = true
			sel[k] = best
			tot += p[best]
		}
		w := make([]float32, K)
		for k, e := range sel {
			w[k] = float32(p[e] / tot)
		}
		ids[t], ws[t] = sel, w
	}
	return ids, ws
}
