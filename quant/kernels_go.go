package quant

// Pure-Go kernels: the reference loops of the fused products, used on every
// platform for shapes the SIMD kernels do not cover and as the whole
// implementation where they do not exist (see matvec_generic.go).

// dotRowGo returns Σ_g scale_g·Σ_{c∈g} q_c·x_c + bias_g·sumx_g for row r of m.
func dotRowGo(m *Matrix, r int, x, sumx []float32) float32 {
	gpr := m.GroupsPerRow()
	wpr := m.WordsPerRow()
	w := m.W[r*wpr : (r+1)*wpr]
	sc := m.Scales[r*gpr : (r+1)*gpr]
	bi := m.Biases[r*gpr : (r+1)*gpr]
	switch m.Bits {
	case 4:
		return dot4Go(w, sc, bi, x, sumx, m.GroupSize)
	case 2:
		return dot2Go(w, sc, bi, x, sumx, m.GroupSize)
	default:
		return dot8Go(w, sc, bi, x, sumx, m.GroupSize)
	}
}

func dot4Go(w []uint32, sc, bi []uint16, x, sumx []float32, group int) float32 {
	var total float32
	wpg := group / 8
	for g := range sc {
		ws := w[g*wpg : (g+1)*wpg]
		xs := x[g*group : (g+1)*group]
		var a0, a1 float32
		for j, v := range ws {
			xx := xs[j*8 : j*8+8 : j*8+8]
			a0 += float32(v&15)*xx[0] + float32(v>>4&15)*xx[1] + float32(v>>8&15)*xx[2] + float32(v>>12&15)*xx[3]
			a1 += float32(v>>16&15)*xx[4] + float32(v>>20&15)*xx[5] + float32(v>>24&15)*xx[6] + float32(v>>28)*xx[7]
		}
		total += BF16ToF32(sc[g])*(a0+a1) + BF16ToF32(bi[g])*sumx[g]
	}
	return total
}

func dot2Go(w []uint32, sc, bi []uint16, x, sumx []float32, group int) float32 {
	var total float32
	wpg := group / 16
	for g := range sc {
		ws := w[g*wpg : (g+1)*wpg]
		xs := x[g*group : (g+1)*group]
		var a0, a1 float32
		for j, v := range ws {
			xx := xs[j*16 : j*16+16 : j*16+16]
			a0 += float32(v&3)*xx[0] + float32(v>>2&3)*xx[1] + float32(v>>4&3)*xx[2] + float32(v>>6&3)*xx[3] +
				float32(v>>8&3)*xx[4] + float32(v>>10&3)*xx[5] + float32(v>>12&3)*xx[6] + float32(v>>14&3)*xx[7]
			a1 += float32(v>>16&3)*xx[8] + float32(v>>18&3)*xx[9] + float32(v>>20&3)*xx[10] + float32(v>>22&3)*xx[11] +
				float32(v>>24&3)*xx[12] + float32(v>>26&3)*xx[13] + float32(v>>28&3)*xx[14] + float32(v>>30)*xx[15]
		}
		total += BF16ToF32(sc[g])*(a0+a1) + BF16ToF32(bi[g])*sumx[g]
	}
	return total
}

func dot8Go(w []uint32, sc, bi []uint16, x, sumx []float32, group int) float32 {
	var total float32
	wpg := group / 4
	for g := range sc {
		ws := w[g*wpg : (g+1)*wpg]
		xs := x[g*group : (g+1)*group]
		var a0, a1 float32
		for j, v := range ws {
			xx := xs[j*4 : j*4+4 : j*4+4]
			a0 += float32(v&255)*xx[0] + float32(v>>8&255)*xx[1]
			a1 += float32(v>>16&255)*xx[2] + float32(v>>24)*xx[3]
		}
		total += BF16ToF32(sc[g])*(a0+a1) + BF16ToF32(bi[g])*sumx[g]
	}
	return total
}

// dequantRowGo writes w[r, :] = q·scale + bias into dst[:m.Cols].
func dequantRowGo(dst []float32, m *Matrix, r int) {
	gpr := m.GroupsPerRow()
	wpr := m.WordsPerRow()
	w := m.W[r*wpr : (r+1)*wpr]
	per := 32 / m.Bits
	wpg := m.GroupSize / per
	mask := uint32(1)<<m.Bits - 1
	for g := 0; g < gpr; g++ {
		s := BF16ToF32(m.Scales[r*gpr+g])
		b := BF16ToF32(m.Biases[r*gpr+g])
		ws := w[g*wpg : (g+1)*wpg]
		out := dst[g*m.GroupSize : (g+1)*m.GroupSize]
		switch m.Bits {
		case 4:
			for j, v := range ws {
				o := out[8*j : 8*j+8 : 8*j+8]
				o[0] = float32(v&15)*s + b
				o[1] = float32(v>>4&15)*s + b
				o[2] = float32(v>>8&15)*s + b
				o[3] = float32(v>>12&15)*s + b
				o[4] = float32(v>>16&15)*s + b
				o[5] = float32(v>>20&15)*s + b
				o[6] = float32(v>>24&15)*s + b
				o[7] = float32(v>>28)*s + b
			}
		default:
			for j, v := range ws {
				o := out[per*j : per*j+per : per*j+per]
				for i := range o {
					o[i] = float32(v>>(uint(i*m.Bits))&mask)*s + b
				}
			}
		}
	}
}

// dotF32Go returns Σ a[i]·b[i] with four interleaved partial sums.
func dotF32Go(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotF32x4Go sets out[t] = dotF32Go(a, x[t*stride:]) for t = 0..3.
func dotF32x4Go(out *[4]float32, a, x []float32, stride int) {
	for t := range out {
		out[t] = dotF32Go(a, x[t*stride:t*stride+len(a)])
	}
}
