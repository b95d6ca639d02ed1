// Command gen4bit writes a synthetic directory of packed 4-bit experts (the
// input of fmoe requant) for benchmarks: layout.json plus layer_NN.bin files
// (layer layout, flash-moe's) of Gaussian weights with rare outliers,
// quantized with quant.Quantize. Defaults: the Qwen3.5-397B expert shape
// (hidden 4096, intermediate 1024, group 64), 1 layer × 64 experts.
//
//	go run ./tools/bench/gen4bit -o out/bench-requant/model/packed_experts
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/quant"
)

func main() {
	out := flag.String("o", "", "output directory")
	hidden := flag.Int("hidden", 4096, "hidden size")
	inter := flag.Int("intermediate", 1024, "expert intermediate size")
	layers := flag.Int("layers", 1, "layers")
	experts := flag.Int("experts", 64, "experts per layer")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "gen4bit: -o DIR is required")
		os.Exit(2)
	}
	if err := run(*out, *hidden, *inter, *layers, *experts); err != nil {
		fmt.Fprintln(os.Stderr, "gen4bit:", err)
		os.Exit(1)
	}
}

func run(dir string, hidden, inter, layers, experts int) error {
	el, err := formats.NewExpertLayout(hidden, inter, 4, 64)
	if err != nil {
		return err
	}
	p := &formats.PackLayout{Format: formats.PackFormat, Layout: formats.PackLayoutLayer, NumLayers: layers,
		NumExperts: experts, Expert: *el, Checksums: "checksums.json"}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for l := range layers {
		p.Layers = append(p.Layers, l)
		name, _ := p.ExpertFile(l, 0)
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		errs := make(chan error, experts)
		sem := make(chan struct{}, runtime.GOMAXPROCS(0))
		for e := range experts {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				blob, err := expert(el, uint64(l), uint64(e))
				if err == nil {
					_, off := p.ExpertFile(l, e)
					_, err = f.WriteAt(blob, off)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "layout.json"), append(data, '\n'), 0o644)
}

// expert builds one packed 4-bit expert: N(0, 0.02) weights, 1 in 512 six
// times larger (the outliers real MoE experts have).
func expert(el *formats.ExpertLayout, layer, e uint64) ([]byte, error) {
	r := rand.New(rand.NewPCG(layer, e))
	blob := make([]byte, el.Size)
	for _, proj := range []string{"gate_proj", "up_proj", "down_proj"} {
		rows, cols := el.Intermediate, el.Hidden
		if proj == "down_proj" {
			rows, cols = el.Hidden, el.Intermediate
		}
		w := make([]float32, rows*cols)
		for i := range w {
			x := r.NormFloat64() * 0.02
			if r.IntN(512) == 0 {
				x *= 6
			}
			w[i] = float32(x)
		}
		m, err := quant.Quantize(w, rows, cols, 4, el.GroupSize)
		if err != nil {
			return nil, err
		}
		for suffix, src := range map[string][]byte{
			".weight": u32Bytes(m.W), ".scales": u16Bytes(m.Scales), ".biases": u16Bytes(m.Biases)} {
			c, ok := el.Component(proj + suffix)
			if !ok || c.Size != int64(len(src)) {
				return nil, fmt.Errorf("component %s%s: %d bytes", proj, suffix, len(src))
			}
			copy(blob[c.Offset:], src)
		}
	}
	return blob, nil
}

func u32Bytes(w []uint32) []byte {
	b := make([]byte, 4*len(w))
	copy(quant.U32s(b), w)
	return b
}

func u16Bytes(w []uint16) []byte {
	b := make([]byte, 2*len(w))
	copy(quant.U16s(b), w)
	return b
}
