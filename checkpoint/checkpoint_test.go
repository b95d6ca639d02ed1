package checkpoint

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fmoe/fmoe/formats"
)

const tinyConfig = `{"model_type":"qwen3_5_moe","text_config":{"hidden_size":128,"num_hidden_layers":4,
"num_attention_heads":4,"num_key_value_heads":2,"head_dim":32,"vocab_size":1000,"rms_norm_eps":1e-6,
"num_experts":8,"num_experts_per_tok":2,"moe_intermediate_size":64,"shared_expert_intermediate_size":64,
"full_attention_interval":4,"linear_num_key_heads":2,"linear_num_value_heads":4,"linear_key_head_dim":32,
"linear_value_head_dim":32,"linear_conv_kernel_dim":4,"rope_theta":1e7,"partial_rotary_factor":0.25},
"quantization":{"group_size":64,"bits":4,"language_model.model.layers.0.mlp.gate":{"group_size":64,"bits":8}}}`

func blob(name string, dt formats.DType, shape ...int64) formats.TensorBlob {
	n, _ := formats.ByteSize(dt, shape)
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + len(name))
	}
	return formats.TensorBlob{Name: name, DType: dt, Shape: shape, Data: data}
}

func writeShard(t *testing.T, dir, name string, blobs ...formats.TensorBlob) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := formats.WriteSafetensors(f, blobs, map[string]string{"format": "mlx"}); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

var (
	gateW = blob("language_model.model.layers.0.mlp.gate.weight", formats.U32, 8, 32)
	gateS = blob("language_model.model.layers.0.mlp.gate.scales", formats.BF16, 8, 2)
	gateB = blob("language_model.model.layers.0.mlp.gate.biases", formats.BF16, 8, 2)
	normW = blob("language_model.model.norm.weight", formats.BF16, 128)
	embW  = blob("language_model.model.embed_tokens.weight", formats.U32, 1000, 16)
	embS  = blob("language_model.model.embed_tokens.scales", formats.BF16, 1000, 2)
	embB  = blob("language_model.model.embed_tokens.biases", formats.BF16, 1000, 2)
)

func indexed(t *testing.T, weightMap map[string]string) string {
	dir := t.TempDir()
	writeFile(t, dir, ConfigFile, tinyConfig)
	writeShard(t, dir, "model-00001-of-00002.safetensors", gateW, gateS, gateB, normW)
	writeShard(t, dir, "model-00002-of-00002.safetensors", embW, embS, embB)
	b, _ := json.Marshal(formats.SafetensorsIndex{Metadata: map[string]any{}, WeightMap: weightMap})
	writeFile(t, dir, IndexFile, string(b))
	return dir
}

func fullMap() map[string]string {
	m := map[string]string{}
	for _, b := range []formats.TensorBlob{gateW, gateS, gateB, normW} {
		m[b.Name] = "model-00001-of-00002.safetensors"
	}
	for _, b := range []formats.TensorBlob{embW, embS, embB} {
		m[b.Name] = "model-00002-of-00002.safetensors"
	}
	return m
}

func TestOpenIndexed(t *testing.T) {
	c, err := Open(indexed(t, fullMap()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Config.HiddenSize != 128 || len(c.Tensors) != 7 || len(c.Files) != 2 {
		t.Fatalf("config %+v, %d tensors, files %v", c.Config, len(c.Tensors), c.Files)
	}
	names := c.Names()
	if names[0] != "language_model.model.embed_tokens.biases" || !sortedStrings(names) {
		t.Errorf("names %v", names)
	}
	data, ref, err := c.ReadTensor(normW.Name)
	if err != nil || !reflect.DeepEqual(data, normW.Data) || ref.File != "model-00001-of-00002.safetensors" {
		t.Errorf("ReadTensor: %v %v", err, ref)
	}
	spec, ok, err := c.Quant("language_model.model.layers.0.mlp.gate", 128)
	if err != nil || !ok || spec != (formats.QuantSpec{GroupSize: 64, Bits: 8}) {
		t.Errorf("gate quant %v %v %v", spec, ok, err)
	}
	spec, ok, err = c.Quant("language_model.model.embed_tokens", 0)
	if err != nil || !ok || spec != (formats.QuantSpec{GroupSize: 64, Bits: 4}) {
		t.Errorf("embed quant %v %v %v", spec, ok, err)
	}
	if _, ok, err := c.Quant("language_model.model.norm", 128); ok || err != nil {
		t.Errorf("norm is not quantized: %v %v", ok, err)
	}
	if _, _, err := c.Quant("language_model.model.layers.0.mlp.gate", 256); !errors.Is(err, formats.ErrShape) {
		t.Errorf("wrong in-dim accepted: %v", err)
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] < s[i-1] {
			return false
		}
	}
	return true
}

func TestOpenSingle(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, ConfigFile, tinyConfig)
	writeShard(t, dir, SingleFile, normW, gateW)
	c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Tensors) != 2 || c.Tensors[gateW.Name].File != SingleFile {
		t.Errorf("tensors %v", c.Tensors)
	}
}

func TestOpenErrors(t *testing.T) {
	missingShard := fullMap()
	missingShard["x"] = "model-00003-of-00003.safetensors"
	missingTensor := fullMap()
	missingTensor["language_model.lm_head.weight"] = "model-00002-of-00002.safetensors"
	cases := map[string]struct {
		dir  func(t *testing.T) string
		want error
	}{
		"missing shard":  {func(t *testing.T) string { return indexed(t, missingShard) }, ErrMissingShard},
		"missing tensor": {func(t *testing.T) string { return indexed(t, missingTensor) }, ErrMissingTensor},
		"bad index": {func(t *testing.T) string {
			d := indexed(t, fullMap())
			writeFile(t, d, IndexFile, `{"weight_map":{"a":"../../etc/passwd"}}`)
			return d
		}, formats.ErrIndex},
		"no config": {func(t *testing.T) string { return t.TempDir() }, fs.ErrNotExist},
		"bad config": {func(t *testing.T) string {
			d := t.TempDir()
			writeFile(t, d, ConfigFile, `{"hidden_size":1}`)
			return d
		}, formats.ErrConfig},
		"no weights": {func(t *testing.T) string {
			d := t.TempDir()
			writeFile(t, d, ConfigFile, tinyConfig)
			return d
		}, ErrNoWeights},
		"duplicate": {func(t *testing.T) string {
			d := t.TempDir()
			writeFile(t, d, ConfigFile, tinyConfig)
			writeShard(t, d, "a.safetensors", normW)
			writeShard(t, d, "b.safetensors", normW)
			return d
		}, ErrDuplicate},
		"corrupt shard": {func(t *testing.T) string {
			d := t.TempDir()
			writeFile(t, d, ConfigFile, tinyConfig)
			writeFile(t, d, SingleFile, "\xff\xff\xff\xff\x00\x00\x00\x00{}")
			return d
		}, formats.ErrHeader},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ck, err := Open(c.dir(t))
			if err == nil {
				ck.Close()
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}
