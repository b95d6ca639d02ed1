package hfconv

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/atomicfile"
	"github.com/fmoe/fmoe/quant"
)

// TwinFormat is the element type of an HF twin's weights.
type TwinFormat string

// Twin formats.
const (
	TwinBF16 TwinFormat = "hf-bf16" // every weight BF16 (A_log keeps its dtype)
	TwinFP8  TwinFormat = "hf-fp8"  // 2-D/3-D Linear weights F8_E4M3 with 128×128 weight_scale_inv
)

// WriteTwin writes the original-HF-layout twin of an MLX checkpoint into
// dir (model.safetensors + config.json, plus any tokenizer files): quantized
// modules dequantized, experts fused into experts.gate_up_proj/down_proj,
// norms back to zero-centred, conv1d as [C, 1, K], names under
// model.language_model. It holds the whole model in memory: it makes test
// fixtures and small demos (fmoe synth --format), not real models.
func WriteTwin(ctx context.Context, src *checkpoint.Checkpoint, dir string, format TwinFormat) error {
	if format != TwinBF16 && format != TwinFP8 {
		return fmt.Errorf("hfconv: unknown twin format %q (want %s or %s)", format, TwinBF16, TwinFP8)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	blobs := map[string]formats.TensorBlob{}
	experts := map[string][3][]float32{} // HF layer prefix -> gate, up, down (dequantized)
	expShape := map[string][3][]int64{}
	for _, name := range src.Names() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasSuffix(name, ".scales") || strings.HasSuffix(name, ".biases") {
			continue
		}
		hf := hfName(name)
		ref := src.Tensors[name]
		module := strings.TrimSuffix(name, ".weight")
		if _, q := src.Tensors[module+".scales"]; q && module != name {
			spec, _, err := src.Quant(module, 0)
			if err != nil {
				return err
			}
			vals, shape, err := dequantModule(src, module, spec)
			if err != nil {
				return err
			}
			if i := strings.Index(name, ".mlp.switch_mlp."); i >= 0 {
				key := hfName(name[:i]) + ".mlp.experts."
				proj := strings.TrimSuffix(name[i+len(".mlp.switch_mlp."):], "_proj.weight")
				k := map[string]int{"gate": 0, "up": 1, "down": 2}[proj]
				e, s := experts[key], expShape[key]
				e[k], s[k] = vals, shape
				experts[key], expShape[key] = e, s
				continue
			}
			blobs[hf] = weightBlob(hf, vals, shape, format, blobs)
			continue
		}
		raw, _, err := src.ReadTensor(name)
		if err != nil {
			return err
		}
		shape := append([]int64(nil), ref.Info.Shape...)
		switch {
		case strings.HasSuffix(name, "conv1d.weight"):
			shape = []int64{shape[0], 1, shape[1]}
		case isZeroCentred(name):
			vals := make([]float32, len(raw)/2)
			if err := decode(vals, raw, ref.Info.DType); err != nil {
				return err
			}
			for i := range vals {
				vals[i] -= 1
			}
			raw = bf16Bytes(vals)
		}
		blobs[hf] = formats.TensorBlob{Name: hf, DType: ref.Info.DType, Shape: shape, Data: raw}
	}
	for key, e := range experts {
		s := expShape[key]
		if e[0] == nil || e[1] == nil || e[2] == nil {
			return fmt.Errorf("%w: %s: incomplete switch_mlp experts", ErrSource, key)
		}
		nE, i, h := s[0][0], s[0][1], s[0][2]
		gu := make([]float32, 0, 2*len(e[0]))
		per := int(i * h)
		for x := 0; x < int(nE); x++ {
			gu = append(gu, e[0][x*per:(x+1)*per]...)
			gu = append(gu, e[1][x*per:(x+1)*per]...)
		}
		name := key + "gate_up_proj"
		blobs[name] = weightBlob(name, gu, []int64{nE, 2 * i, h}, format, blobs)
		name = key + "down_proj"
		blobs[name] = weightBlob(name, e[2], s[2], format, blobs)
	}
	names := make([]string, 0, len(blobs))
	for n := range blobs {
		names = append(names, n)
	}
	sort.Strings(names)
	list := make([]formats.TensorBlob, len(names))
	for i, n := range names {
		list[i] = blobs[n]
	}
	if err := atomicfile.Write(ctx, filepath.Join(dir, checkpoint.SingleFile), 0o644, func(f *os.File) error {
		w := bufio.NewWriterSize(f, 1<<20)
		if err := formats.WriteSafetensors(w, list, map[string]string{"format": "pt"}); err != nil {
			return err
		}
		return w.Flush()
	}); err != nil {
		return err
	}
	return writeTwinMeta(ctx, src.Dir, dir, format)
}

// hfName maps an MLX tensor name to the HF multimodal checkpoint's name.
func hfName(name string) string {
	rest := strings.TrimPrefix(name, "language_model.")
	if strings.HasPrefix(rest, "lm_head") {
		return rest
	}
	return "model.language_model." + strings.TrimPrefix(rest, "model.")
}

func isZeroCentred(name string) bool {
	for _, s := range []string{".input_layernorm.weight", ".post_attention_layernorm.weight", ".q_norm.weight", ".k_norm.weight"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return strings.HasSuffix(name, "model.norm.weight")
}

func dequantModule(src *checkpoint.Checkpoint, module string, spec formats.QuantSpec) ([]float32, []int64, error) {
	var bufs [3][]byte
	for i, suf := range []string{".weight", ".scales", ".biases"} {
		b, _, err := src.ReadTensor(module + suf)
		if err != nil {
			return nil, nil, err
		}
		bufs[i] = b
	}
	wshape := src.Tensors[module+".weight"].Info.Shape
	cols := int(wshape[len(wshape)-1]) * 32 / spec.Bits
	rows := 1
	for _, d := range wshape[:len(wshape)-1] {
		rows *= int(d)
	}
	m, err := quant.FromBytes(spec.Bits, spec.GroupSize, rows, cols, bufs[0], bufs[1], bufs[2])
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", module, err)
	}
	vals := make([]float32, rows*cols)
	for r := 0; r < rows; r++ {
		m.DequantizeRow(vals[r*cols:(r+1)*cols], r)
	}
	shape := append(append([]int64(nil), wshape[:len(wshape)-1]...), int64(cols))
	return vals, shape, nil
}

// weightBlob encodes a dequantized weight as BF16, or as FP8 E4M3 with its
// 128×128 weight_scale_inv tensor (added to blobs) for the FP8 twin.
func weightBlob(name string, vals []float32, shape []int64, format TwinFormat, blobs map[string]formats.TensorBlob) formats.TensorBlob {
	if format != TwinFP8 || !fp8Weight(name) {
		return formats.TensorBlob{Name: name, DType: formats.BF16, Shape: shape, Data: bf16Bytes(vals)}
	}
	const b = 128
	out, in := int(shape[len(shape)-2]), int(shape[len(shape)-1])
	mats := len(vals) / (out * in)
	sr, sc := (out+b-1)/b, (in+b-1)/b
	scales := make([]float32, mats*sr*sc)
	codes := make([]byte, len(vals))
	for m := 0; m < mats; m++ {
		base := vals[m*out*in:]
		for br := 0; br < sr; br++ {
			for bc := 0; bc < sc; bc++ {
				amax := float32(0)
				for r := br * b; r < min(out, (br+1)*b); r++ {
					for c := bc * b; c < min(in, (bc+1)*b); c++ {
						amax = max(amax, float32(math.Abs(float64(base[r*in+c]))))
					}
				}
				s := amax / 448
				if s == 0 {
					s = 1
				}
				scales[(m*sr+br)*sc+bc] = s
				for r := br * b; r < min(out, (br+1)*b); r++ {
					for c := bc * b; c < min(in, (bc+1)*b); c++ {
						codes[m*out*in+r*in+c] = encodeE4M3(base[r*in+c] / s)
					}
				}
			}
		}
	}
	sshape := append(append([]int64(nil), shape[:len(shape)-2]...), int64(sr), int64(sc))
	sb := make([]byte, 4*len(scales))
	for i, s := range scales {
		binary.LittleEndian.PutUint32(sb[4*i:], math.Float32bits(s))
	}
	blobs[name+"_scale_inv"] = formats.TensorBlob{Name: name + "_scale_inv", DType: formats.F32, Shape: sshape, Data: sb}
	return formats.TensorBlob{Name: name, DType: formats.F8E4M3, Shape: shape, Data: codes}
}

// fp8Weight reports whether an FP8 release stores this weight in FP8: like
// the official FP8 checkpoints, embeddings, the LM head and the router and
// shared-expert gates stay BF16.
func fp8Weight(name string) bool {
	for _, s := range []string{"embed_tokens", "lm_head", "mlp.gate.", "shared_expert_gate"} {
		if strings.Contains(name, s) {
			return false
		}
	}
	return true
}

// encodeE4M3 rounds v to the nearest finite E4M3FN value (ties to even
// code), saturating at ±448.
func encodeE4M3(v float32) byte {
	sign := byte(0)
	if v < 0 || (v == 0 && math.Signbit(float64(v))) {
		sign, v = 0x80, -v
	}
	best, bestD := byte(0), float32(math.Inf(1))
	for c := 0; c <= 0x7e; c++ {
		d := float32(math.Abs(float64(fp8E4M3[c] - v)))
		if d < bestD || (d == bestD && c%2 == 0) {
			best, bestD = byte(c), d
		}
	}
	return sign | best
}

func bf16Bytes(vals []float32) []byte {
	b := make([]byte, 2*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint16(b[2*i:], quant.F32ToBF16(v))
	}
	return b
}

// writeTwinMeta writes config.json without the MLX quantization blocks (with
// an FP8 quantization_config for the FP8 twin) and copies tokenizer files.
func writeTwinMeta(ctx context.Context, srcDir, dir string, format TwinFormat) error {
	data, err := os.ReadFile(filepath.Join(srcDir, checkpoint.ConfigFile))
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%s: %w", checkpoint.ConfigFile, err)
	}
	delete(cfg, "quantization")
	delete(cfg, "quantization_config")
	if tc, ok := cfg["text_config"].(map[string]any); ok {
		delete(tc, "quantization")
		delete(tc, "quantization_config")
	}
	if format == TwinFP8 {
		cfg["quantization_config"] = map[string]any{"quant_method": "fp8", "fmt": "e4m3",
			"activation_scheme": "dynamic", "weight_block_size": []int{128, 128}}
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(ctx, filepath.Join(dir, checkpoint.ConfigFile), 0o644, func(f *os.File) error {
		_, err := f.Write(append(out, '\n'))
		return err
	}); err != nil {
		return err
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		b, err := os.ReadFile(filepath.Join(srcDir, name))
		if err != nil {
			continue
		}
		if err := atomicfile.Write(ctx, filepath.Join(dir, name), 0o644, func(f *os.File) error {
			_, err := f.Write(b)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}
