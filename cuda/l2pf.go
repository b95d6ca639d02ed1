package cuda

import (
	"os"
	"strconv"
	"unsafe"
)

// L2 prefetch (kernels_mx.cu, fmoe_pf_dist and fmoe_pf_exp): the decode
// matvec and expert kernels can request rows they will read soon into L2
// with cp.async.bulk.prefetch (sm_90 and NVRTC 12 or newer; elsewhere the
// kernels ignore it). It changes when bytes arrive, never a result.

// L2PrefetchTiles is how many of a block's tiles ahead of the one in
// registers qmx, qmxe and qmxd request into L2 (0: none).
// FMOE_CUDA_L2PF overrides it.
var L2PrefetchTiles = 0

// L2PrefetchExperts makes qmxe request the whole blobs of the token's
// routed experts (and the shared expert's tensors when merged) at its start,
// so that qmxd finds the down rows in L2. FMOE_CUDA_L2PFX=0/1 overrides it.
var L2PrefetchExperts = false

// setL2Prefetch (worker only) writes the two switches into the module's
// globals.
func (d *device) setL2Prefetch(mod uintptr) error {
	dist, exp := L2PrefetchTiles, 0
	if L2PrefetchExperts {
		exp = 1
	}
	if v, err := strconv.Atoi(os.Getenv("FMOE_CUDA_L2PF")); err == nil && v >= 0 {
		dist = v
	}
	if v, ok := os.LookupEnv("FMOE_CUDA_L2PFX"); ok {
		exp = 0
		if v != "0" {
			exp = 1
		}
	}
	for _, g := range []struct {
		name string
		v    int32
	}{{"fmoe_pf_dist", int32(dist)}, {"fmoe_pf_exp", int32(exp)}} {
		var p, n uintptr
		cn := cstring(g.name)
		if err := check(call(d.l.drv.cuModuleGetGlobal, uintptr(unsafe.Pointer(&p)), uintptr(unsafe.Pointer(&n)), mod, uintptr(unsafe.Pointer(&cn[0]))),
			"cuModuleGetGlobal "+g.name); err != nil {
			return err
		}
		v := g.v
		if err := d.htod(p, unsafe.Pointer(&v), 4); err != nil {
			return err
		}
	}
	return nil
}
