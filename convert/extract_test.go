package convert_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/convert"
	"github.com/fmoe/fmoe/formats"
	"github.com/fmoe/fmoe/internal/atomicfile/atomicfiletest"
	"github.com/fmoe/fmoe/internal/progress"
	"github.com/fmoe/fmoe/pack"
)

const tiny = "testdata/tiny-mlx"

// copyDir copies the tiny checkpoint into a fresh directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	es, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func extract(t *testing.T, ctx context.Context, src, out string, opt convert.Options) (*convert.Summary, error) {
	t.Helper()
	x, err := convert.Open(src)
	if err != nil {
		return nil, err
	}
	defer x.Close()
	return x.Run(ctx, out, opt, nil)
}

func TestGolden(t *testing.T) {
	out := t.TempDir()
	for _, jobs := range []int{1, 7} {
		if _, err := extract(t, context.Background(), tiny, out, convert.Options{Jobs: jobs, Force: true}); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(out, convert.WeightsFile))
		want, err := os.ReadFile("testdata/golden/model_weights.bin")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("jobs %d: model_weights.bin (%d bytes) differs from flash-moe's (%d bytes)", jobs, len(got), len(want))
		}
	}
	gotJSON, _ := os.ReadFile(filepath.Join(out, convert.ManifestFile))
	wantJSON, _ := os.ReadFile("testdata/golden/model_weights.json")
	// Same text from "num_tensors" up to the config block (which flash-moe hard-codes).
	section := func(b []byte) string {
		s := string(b)
		i, j := strings.Index(s, `"num_tensors"`), strings.Index(s, `"config"`)
		if i < 0 || j < i {
			t.Fatalf("manifest lacks num_tensors/config: %.200s", s)
		}
		return s[i:j]
	}
	if section(gotJSON) != section(wantJSON) {
		t.Errorf("manifest tensors section differs from flash-moe's")
	}
	var g, w map[string]any
	json.Unmarshal(gotJSON, &g)
	json.Unmarshal(wantJSON, &w)
	if !jsonEqual(g["tensors"], w["tensors"]) || g["num_tensors"] != w["num_tensors"] {
		t.Errorf("manifest tensors differ")
	}
	m, err := formats.ParseManifest(gotJSON)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := formats.ConfigFromManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HiddenSize != 32 || cfg.NumHiddenLayers != 11 || cfg.NumExperts != 4 {
		t.Errorf("config block not from config.json: %+v", cfg)
	}
	// flash-moe's hard-coded keys are all present.
	for k := range w["config"].(map[string]any) {
		if _, ok := g["config"].(map[string]any)[k]; !ok {
			t.Errorf("config block lacks %q", k)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestTokenizerAndChecksums(t *testing.T) {
	src := copyDir(t, tiny)
	tok, err := os.ReadFile("../testdata/tokenizer/tiny_tokenizer.json")
	if err != nil {
		t.Fatal("tokenizer test data not available:", err)
	}
	if err := os.WriteFile(filepath.Join(src, convert.TokenizerJSONFile), tok, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, convert.TokenizerConfigFile), []byte(`{"x":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "model")
	s, err := extract(t, context.Background(), src, out, convert.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for file, golden := range map[string]string{
		convert.TokenizerBinFile: "../testdata/tokenizer/tiny_tokenizer.bin",
		convert.VocabFile:        "../testdata/tokenizer/tiny_vocab.bin",
	} {
		got, _ := os.ReadFile(filepath.Join(out, file))
		want, _ := os.ReadFile(golden)
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from flash-moe's %s", file, golden)
		}
	}
	if len(s.Files) != 7 {
		t.Errorf("files %v", s.Files)
	}
	sums, err := pack.ReadChecksums(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(sums.Files) != 6 {
		t.Errorf("checksums list %d files, want 6", len(sums.Files))
	}
	findings, err := pack.Verify(context.Background(), out, pack.VerifyOptions{}, nil)
	if err != nil || len(findings) != 0 {
		t.Errorf("verify: %v %v", findings, err)
	}
}

func TestResume(t *testing.T) {
	out := t.TempDir()
	s, err := extract(t, context.Background(), tiny, out, convert.Options{})
	if err != nil || s.Reused {
		t.Fatalf("first run: %+v %v", s, err)
	}
	s, err = extract(t, context.Background(), tiny, out, convert.Options{})
	if err != nil || !s.Reused {
		t.Fatalf("second run did not reuse: %+v %v", s, err)
	}
	s, err = extract(t, context.Background(), tiny, out, convert.Options{Force: true})
	if err != nil || s.Reused {
		t.Fatalf("--force reused: %+v %v", s, err)
	}
	// Damage the file: the next run rewrites it.
	path := filepath.Join(out, convert.WeightsFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 1
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = extract(t, context.Background(), tiny, out, convert.Options{})
	if err != nil || s.Reused {
		t.Fatalf("damaged file reused: %+v %v", s, err)
	}
	want, _ := os.ReadFile("testdata/golden/model_weights.bin")
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Error("rewritten file differs")
	}
}

func TestCancel(t *testing.T) {
	out := t.TempDir()
	x, err := convert.Open(tiny)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	ctx, cancel := context.WithCancel(context.Background())
	_, err = x.Run(ctx, out, convert.Options{Jobs: 2}, progress.Func(func(int64) { cancel() }))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	// Only complete files may exist under final names.
	want, _ := os.ReadFile("testdata/golden/model_weights.bin")
	if got, err := os.ReadFile(filepath.Join(out, convert.WeightsFile)); err == nil && !bytes.Equal(got, want) {
		t.Error("partial model_weights.bin under its final name")
	}
	if _, err := os.Stat(filepath.Join(out, pack.ChecksumsFile)); err == nil {
		t.Error("checksums.json written by a canceled run")
	}
	atomicfiletest.NoTemps(t, out)
}

// header rewrites the JSON header of a safetensors file.
func header(t *testing.T, path string, edit func(h map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var h map[string]any
	if err := json.Unmarshal(b[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	hb, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	for len(hb) < int(n) {
		hb = append(hb, ' ')
	}
	if len(hb) != int(n) {
		t.Fatalf("edited header grew from %d to %d bytes", n, len(hb))
	}
	copy(b[8:], hb)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

const shard1 = "model-00001-of-00002.safetensors"

func TestBadInput(t *testing.T) {
	// A tensor that lives in shard 1 (names are assigned alternately in sorted order).
	const tname = "language_model.lm_head.biases"
	tensor := func(h map[string]any) map[string]any { return h[tname].(map[string]any) }
	cases := []struct {
		name    string
		mutate  func(t *testing.T, dir string)
		want    error
		mention []string
	}{
		{"header length past EOF", func(t *testing.T, dir string) {
			p := filepath.Join(dir, shard1)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			binary.LittleEndian.PutUint64(b, uint64(len(b)))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, formats.ErrHeader, []string{shard1}},
		{"non-JSON header", func(t *testing.T, dir string) {
			p := filepath.Join(dir, shard1)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			copy(b[8:], "not json")
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, formats.ErrHeader, []string{shard1}},
		{"unknown dtype", func(t *testing.T, dir string) {
			header(t, filepath.Join(dir, shard1), func(h map[string]any) { tensor(h)["dtype"] = "Q4" })
		}, formats.ErrDType, []string{shard1, tname}},
		{"offsets out of range", func(t *testing.T, dir string) {
			header(t, filepath.Join(dir, shard1), func(h map[string]any) { tensor(h)["data_offsets"] = []int{100000, 100128} })
		}, formats.ErrOffsets, []string{shard1, tname}},
		{"overlapping", func(t *testing.T, dir string) {
			header(t, filepath.Join(dir, shard1), func(h map[string]any) {
				for name, v := range h {
					o, ok := v.(map[string]any)
					if ok && name != tname && o["dtype"] == "BF16" && jsonEqual(o["shape"], tensor(h)["shape"]) {
						tensor(h)["data_offsets"] = o["data_offsets"]
						return
					}
				}
				t.Fatal("no tensor of the same shape in shard 1")
			})
		}, formats.ErrOffsets, []string{shard1}},
		{"offsets not matching shape", func(t *testing.T, dir string) {
			header(t, filepath.Join(dir, shard1), func(h map[string]any) { tensor(h)["shape"] = []int{64, 2} })
		}, formats.ErrOffsets, []string{shard1, tname}},
		{"shard in index but missing", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, shard1)); err != nil {
				t.Fatal(err)
			}
		}, checkpoint.ErrMissingShard, []string{shard1}},
		{"tensor missing from its shard", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model.safetensors.index.json")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			var idx map[string]any
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Fatal(err)
			}
			idx["weight_map"].(map[string]any)["language_model.model.extra.weight"] = shard1
			if b, err = json.Marshal(idx); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, checkpoint.ErrMissingTensor, []string{shard1, "language_model.model.extra.weight"}},
		{"shard truncated", func(t *testing.T, dir string) {
			p := filepath.Join(dir, shard1)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b[:len(b)-100], 0o644); err != nil {
				t.Fatal(err)
			}
		}, formats.ErrOffsets, []string{shard1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := copyDir(t, tiny)
			tc.mutate(t, src)
			out := filepath.Join(t.TempDir(), "out")
			_, err := extract(t, context.Background(), src, out, convert.Options{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, m := range tc.mention {
				if !strings.Contains(msg, m) {
					t.Errorf("error %q does not name %q", msg, m)
				}
			}
			if _, err := os.Stat(filepath.Join(out, convert.WeightsFile)); err == nil {
				t.Error("model_weights.bin written despite bad input")
			}
			atomicfiletest.NoTemps(t, filepath.Dir(out))
		})
	}
}

func TestUnwritableOutput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := extract(t, context.Background(), tiny, filepath.Join(file, "out"), convert.Options{}); err == nil {
		t.Fatal("extract into a path under a regular file succeeded")
	}
}

func TestDiskFull(t *testing.T) {
	out := atomicfiletest.SmallFS(t, 16<<10) // model_weights.bin is 19712 bytes
	_, err := extract(t, context.Background(), tiny, out, convert.Options{})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v, want ENOSPC", err)
	}
	if es, _ := os.ReadDir(out); len(es) != 0 {
		t.Errorf("output holds %d entries after ENOSPC", len(es))
	}
}
