package cuda

import "os"

// The shared expert merged into a decode step's expert launches.
//
// After a one-token MoE whose experts are all resident, the engine runs the
// shared expert: gate and up projections of the MoE input, SwiGLU, the down
// projection, the one-row sigmoid gate, SigmoidGateAdd into the MoE output
// and the residual Add. The shared expert has the routed experts' shape, so
// the backend holds the MoE's qmxe/qmxd launches back (b.fz.moe) while these
// operations arrive and, when they match, runs the shared expert as expert K
// of both launches: qmxe also writes its gate, up and SwiGLU rows and the
// gate's logit, qmxd weights it by σ(logit), writes its own output and adds
// the sum to the residual (kernels_mx.cu, descriptor SH). Two launches and
// their latency less per layer. An operation that does not fit launches the
// experts as usual and replays the operations taken, in order.

// pendMoE is a one-token MoE held back, and the shared expert's operations
// taken so far.
type pendMoE struct {
	c                    *expertCache
	p                    qmxEx
	table                uintptr
	x, d                 *Tensor
	ids, wts, hbuf, part uintptr
	K                    int

	gate, up, down, sgate *fItem  // y = w·x of the shared expert's projections and its sigmoid gate
	swiglu                *Tensor // SwiGLU(swiglu, gate.y, up.y)
	gateAdd               bool    // SigmoidGateAdd(d, down.y, sgate.y)
	res                   *Tensor // Add(res, d)
	ops                   []func() error
}

// MergeShared lets a one-token MoE take in the shared expert (above);
// FMOE_CUDA_SHARED=0 or 1 overrides it.
var MergeShared = true

func mergeShared() bool {
	if v, ok := os.LookupEnv("FMOE_CUDA_SHARED"); ok {
		return v != "0"
	}
	return MergeShared
}

// holdMoE (worker only) holds back the expert launches of a one-token MoE
// with all experts resident when the shared expert may join them; false:
// not held (the caller launches them).
func (b *Backend) holdMoE(c *expertCache, table uintptr, xt, d *Tensor, ids, wts, hbuf, part uintptr, K int) bool {
	if b.fuseOff() || !mergeShared() || xt.rows != 1 || K+1 > qmxMaxK {
		return false
	}
	p, ok := c.qmxPlanExperts(K)
	if !ok || p.dn == "" || (!p.split && c.qmxdSmem(K+1) > 48<<10) {
		return false
	}
	b.fz.moe = &pendMoE{c: c, p: p, table: table, x: xt, d: d, ids: ids, wts: wts, hbuf: hbuf, part: part, K: K}
	return true
}

// moeTake (worker only): with a MoE held back, take the operation into it
// (true; replay is the operation, run if the pattern breaks later) or, when
// it does not fit, launch what is held (false: the caller goes on with the
// operation).
func (b *Backend) moeTake(take func(*pendMoE) bool, replay func() error) (bool, error) {
	pm := b.fz.moe
	if pm == nil {
		return false, nil
	}
	if take(pm) {
		pm.ops = append(pm.ops, replay)
		if pm.res != nil { // complete
			return true, b.flushMoE()
		}
		return true, nil
	}
	return false, b.flushMoE()
}

// flushMoE (worker only) launches a MoE held back: merged with the shared
// expert when its operations arrived up to the gate's add, else as usual
// followed by the operations taken.
func (b *Backend) flushMoE() error {
	pm := b.fz.moe
	if pm == nil {
		return nil
	}
	b.fz.moe = nil
	if pm.gateAdd {
		return b.launchMerged(pm)
	}
	if _, err := b.qmxRunExperts(pm.c, pm.table, pm.x, pm.d, pm.ids, pm.wts, pm.hbuf, pm.part, 0, pm.K); err != nil {
		return err
	}
	for _, op := range pm.ops {
		if err := op(); err != nil {
			return err
		}
	}
	return nil
}

// launchMerged (worker only) runs the MoE and its shared expert as qmxe and
// qmxd with the SH descriptor (kernels_mx.cu).
func (b *Backend) launchMerged(pm *pendMoE) error {
	var D [qbWords]uint64
	for i, w := range []*Weight{pm.gate.w, pm.up.w, pm.down.w, pm.sgate.w} {
		D[3*i], D[3*i+1], D[3*i+2] = uint64(w.w), uint64(w.s), uint64(w.z)
	}
	D[12], D[13] = uint64(pm.sgate.w.bits), uint64(pm.sgate.w.group)
	D[14], D[15], D[16], D[17], D[18] = uint64(pm.gate.y.p), uint64(pm.up.y.p), uint64(pm.swiglu.p), uint64(pm.sgate.y.p), uint64(pm.down.y.p)
	if pm.res != nil {
		D[19] = uint64(pm.res.p)
	}
	sh, err := b.descFor(&D)
	if err != nil {
		return err
	}
	b.fz.merged++
	if err := b.qmxGateUp(pm.c, pm.p, pm.table, pm.x, pm.ids, pm.hbuf, 0, pm.K, sh); err != nil {
		return err
	}
	return b.qmxDown(pm.c, pm.p, pm.table, pm.d, pm.ids, pm.wts, pm.hbuf, 0, pm.K, false, sh)
}

// sharedProj reports whether w·x can be the shared expert's projection of
// rows out, columns in, at bits: the routed experts' format, one row of x,
// 16-byte aligned words, y none of the MoE's tensors.
func (pm *pendMoE) sharedProj(y *Tensor, w *Weight, x *Tensor, out, in, bits int) bool {
	l := pm.c.layout
	return w.w != 0 && w.out == out && w.in == in && w.bits == bits && w.group == l.GroupSize && x.rows == 1 &&
		w.w%16 == 0 && y != pm.x && y != pm.d && y != x
}

func (pm *pendMoE) takeMatMul(y *Tensor, w *Weight, x *Tensor) bool {
	l := pm.c.layout
	switch {
	case pm.gate == nil:
		if x == pm.x && pm.sharedProj(y, w, x, l.Intermediate, l.Hidden, l.Gate.Bits) {
			pm.gate = &fItem{w: w, x: x, y: y}
			return true
		}
	case pm.up == nil:
		if x == pm.x && y != pm.gate.y && pm.sharedProj(y, w, x, l.Intermediate, l.Hidden, l.Up.Bits) {
			pm.up = &fItem{w: w, x: x, y: y}
			return true
		}
	case pm.swiglu != nil && pm.down == nil:
		if x == pm.swiglu && pm.sharedProj(y, w, x, l.Hidden, l.Intermediate, l.Down.Bits) && y != pm.gate.y && y != pm.up.y {
			pm.down = &fItem{w: w, x: x, y: y}
			return true
		}
	case pm.down != nil && pm.sgate == nil:
		if x == pm.x && w.w != 0 && w.out == 1 && w.in == l.Hidden && fusableMV(w, x) && w.w%16 == 0 &&
			y != pm.d && y != pm.x && y != pm.gate.y && y != pm.up.y && y != pm.swiglu && y != pm.down.y {
			pm.sgate = &fItem{w: w, x: x, y: y}
			return true
		}
	}
	return false
}

func (pm *pendMoE) takeSwiGLU(d, g, u *Tensor) bool {
	if pm.up == nil || pm.swiglu != nil || g != pm.gate.y || u != pm.up.y || d.rows != 1 || d.cols != pm.c.layout.Intermediate ||
		d == pm.x || d == pm.d {
		return false
	}
	pm.swiglu = d
	return true
}

func (pm *pendMoE) takeGateAdd(d, x, gate *Tensor) bool {
	if pm.sgate == nil || pm.gateAdd || d != pm.d || x != pm.down.y || gate != pm.sgate.y {
		return false
	}
	pm.gateAdd = true
	return true
}

func (pm *pendMoE) takeAdd(d, x *Tensor) bool {
	if !pm.gateAdd || pm.res != nil || x != pm.d || d == pm.d || d == pm.x || d.rows != 1 || d.cols != pm.d.cols {
		return false
	}
	pm.res = d
	return true
}
