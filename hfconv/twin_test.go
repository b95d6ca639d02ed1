package hfconv

import (
	"bytes"
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/synth"
)

// tinyMLX synthesizes the tiny MLX checkpoint.
func tinyMLX(t *testing.T) string {
	t.Helper()
	o, err := synth.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	p, err := synth.NewPlan(o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := synth.Write(context.Background(), dir, p, 0, nil); err != nil {
		t.Fatal(err)
	}
	return dir
}

func twinOf(t *testing.T, mlxDir string, f TwinFormat) string {
	t.Helper()
	src, err := checkpoint.Open(mlxDir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dir := filepath.Join(t.TempDir(), string(f))
	if err := WriteTwin(context.Background(), src, dir, f); err != nil {
		t.Fatal(err)
	}
	return dir
}

func readAll(t *testing.T, ck *checkpoint.Checkpoint, name string) []byte {
	t.Helper()
	b, _, err := ck.ReadTensor(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTwinRoundTrip converts the HF twins (BF16 and FP8) of an MLX
// checkpoint back: the same tensor names, shapes and dtypes; unquantized
// tensors byte-identical (BF16 twin); quantized weights within the
// quantization error of the original.
func TestTwinRoundTrip(t *testing.T) {
	mlxDir := tinyMLX(t)
	ref, err := checkpoint.Open(mlxDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, f := range []TwinFormat{TwinBF16, TwinFP8} {
		t.Run(string(f), func(t *testing.T) {
			ck, converted, err := Open(twinOf(t, mlxDir, f), Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			if !converted {
				t.Fatal("twin not detected as an HF checkpoint")
			}
			if got, want := ck.Names(), ref.Names(); !slices.Equal(got, want) {
				t.Fatalf("names differ:\n got %v\nwant %v", got, want)
			}
			for _, name := range ref.Names() {
				a, b := ref.Tensors[name].Info, ck.Tensors[name].Info
				if a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || a.Size != b.Size {
					t.Errorf("%s: got %s %v (%d B), want %s %v (%d B)", name, b.DType, b.Shape, b.Size, a.DType, a.Shape, a.Size)
				}
			}
			if q := ck.Config.Quantization; q == nil || q.Bits != 4 || q.GroupSize != 64 {
				t.Fatalf("converted config quantization = %+v", q)
			}
			if spec, ok := ck.Config.Quantization.Lookup("language_model.model.layers.0.mlp.gate"); !ok || spec.Bits != 8 {
				t.Errorf("router gate not recorded as 8-bit: %+v %v", spec, ok)
			}
			for _, name := range ref.Names() {
				module := name[:len(name)-len(filepath.Ext(name))]
				_, quantized := ref.Tensors[module+".scales"]
				if !quantized {
					if f == TwinBF16 && !bytes.Equal(readAll(t, ref, name), readAll(t, ck, name)) {
						t.Errorf("%s: unquantized tensor differs", name)
					}
					continue
				}
				if filepath.Ext(name) != ".weight" {
					continue
				}
				spec, _, err := ref.Quant(module, 0)
				if err != nil {
					t.Fatal(err)
				}
				a, _, err := dequantModule(ref, module, spec)
				if err != nil {
					t.Fatal(err)
				}
				b, _, err := dequantModule(ck, module, spec)
				if err != nil {
					t.Fatal(err)
				}
				var amax, dmax float64
				for i := range a {
					amax = max(amax, math.Abs(float64(a[i])))
					dmax = max(dmax, math.Abs(float64(a[i]-b[i])))
				}
				// Requantizing dequantized values reproduces the grid up to
				// one step (range/15 at 4 bits ≤ 2·amax/15); FP8 adds ~6%.
				if tol := 2 * amax / 15 * 1.2; !(dmax <= tol) { // NaN fails too
					t.Errorf("%s: max |Δ| %g > %g (max |w| %g)", name, dmax, tol, amax)
				}
			}
		})
	}
}

func TestConvertErrors(t *testing.T) {
	cfgShapes := map[string][]int64{
		"model.language_model.layers.0.mlp.experts.gate_up_proj": {4, 7, 64},
	}
	if _, err := MakePlan(cfgShapes, nil, Options{}); !errors.Is(err, ErrSource) {
		t.Errorf("odd gate_up rows: %v", err)
	}
	if _, err := MakePlan(map[string][]int64{"model.language_model.layers.0.linear_attn.conv1d.weight": {8, 4, 1}}, nil, Options{}); !errors.Is(err, ErrSource) {
		t.Errorf("MLX-layout conv in an HF checkpoint: %v", err)
	}
	if _, err := MakePlan(map[string][]int64{
		"model.layers.0.mlp.experts.0.gate_proj.weight": {8, 64},
		"model.layers.0.mlp.experts.2.gate_proj.weight": {8, 64},
	}, nil, Options{}); !errors.Is(err, ErrSource) {
		t.Errorf("missing expert 1: %v", err)
	}
	// An FP8 weight without its scale cannot be read.
	conv := &converter{src: fakeSrc{"w": {Name: "w", DType: formats.F8E4M3, Shape: []int64{2, 64}, Size: 128}}, opt: Options{FP8Block: 128}}
	if err := conv.rows(make([]float32, 128), "w", 0, 2, 64); !errors.Is(err, ErrSource) {
		t.Errorf("FP8 without scale: %v", err)
	}
	// A scale of the wrong shape is refused.
	conv.src = fakeSrc{"w": {Name: "w", DType: formats.F8E4M3, Shape: []int64{2, 64}, Size: 128},
		"w_scale_inv": {Name: "w_scale_inv", DType: formats.F32, Shape: []int64{2, 2}, Size: 16}}
	if err := conv.rows(make([]float32, 128), "w", 0, 2, 64); !errors.Is(err, ErrSource) {
		t.Errorf("FP8 scale of wrong shape: %v", err)
	}
}

type fakeSrc map[string]formats.TensorInfo

func (f fakeSrc) info(name string) (formats.TensorInfo, ioReaderAt, error) {
	ti, ok := f[name]
	if !ok {
		return ti, nil, errors.New("missing " + name)
	}
	return ti, zeroReader{}, nil
}
