package hfconv

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
)

// cacheBlocks bounds the quantized-block cache (each block holds about
// 1 Mi source values: ~0.6 MiB packed at 4 bits).
const cacheBlocks = 256

// Open opens the checkpoint in dir. An MLX checkpoint is returned as it is;
// an original HF release is returned as a virtual MLX checkpoint whose
// tensors are converted on demand (converted reports which).
func Open(dir string, opt Options) (ck *checkpoint.Checkpoint, converted bool, err error) {
	src, err := checkpoint.Open(dir)
	if err != nil {
		return nil, false, err
	}
	if !IsHF(src.Shapes()) {
		return src, false, nil
	}
	ck, err = Convert(src, opt)
	if err != nil {
		src.Close()
		return nil, true, err
	}
	return ck, true, nil
}

// ckReader reads source tensors from a real checkpoint.
type ckReader struct{ ck *checkpoint.Checkpoint }

func (r ckReader) info(name string) (formats.TensorInfo, io.ReaderAt, error) {
	ref, ok := r.ck.Tensors[name]
	if !ok {
		return formats.TensorInfo{}, nil, fmt.Errorf("%w: %q", checkpoint.ErrMissingTensor, name)
	}
	ra, err := r.ck.ReaderAt(ref.File)
	return ref.Info, ra, err
}

// Convert wraps an open HF checkpoint as a virtual MLX one. Closing the
// result closes src.
func Convert(src *checkpoint.Checkpoint, opt Options) (*checkpoint.Checkpoint, error) {
	opt.defaults()
	if bs := fp8BlockSize(src.Dir); bs > 0 && opt.FP8Block == 128 {
		opt.FP8Block = bs
	}
	plan, err := MakePlan(src.Shapes(), src.Config, opt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src.Dir, err)
	}
	conv := &converter{src: ckReader{src}, opt: opt, cache: newBlockCache(cacheBlocks)}
	tensors := map[string]checkpoint.Ref{}
	var files []checkpoint.VirtualFile
	add := func(info formats.TensorInfo, r io.ReaderAt) {
		file := "hfconv:" + info.Name
		info.Offset = 0
		tensors[info.Name] = checkpoint.Ref{File: file, Info: info}
		files = append(files, checkpoint.VirtualFile{Name: file, Size: info.Size, Reader: r})
	}
	for _, m := range plan.Modules {
		for comp, info := range m.Tensors() {
			add(info, &moduleFile{c: conv, m: m, comp: comp})
		}
	}
	for _, d := range plan.Dense {
		sinfo, _, err := conv.src.info(d.Src)
		if err != nil {
			return nil, err
		}
		dt := d.DType
		if d.tr == keep {
			dt = sinfo.DType
		}
		add(formats.TensorInfo{Name: d.Name, DType: dt, Shape: d.Shape, Size: d.size(sinfo)}, &denseFile{c: conv, d: d})
	}
	cfg := *src.Config
	cfg.Quantization = &formats.QuantConfig{GroupSize: opt.GroupSize, Bits: opt.Bits, Overrides: plan.Overrides}
	return checkpoint.NewVirtual(src.Dir, &cfg, tensors, files, src), nil
}

// hfQuant is the part of an HF quantization_config fmoe reads.
type hfQuant struct {
	Block []int `json:"weight_block_size"`
}

// fp8BlockSize reads weight_block_size from an HF quantization_config, top
// level or under text_config (0 when absent or not square).
func fp8BlockSize(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, checkpoint.ConfigFile))
	if err != nil {
		return 0
	}
	var c struct {
		Q    *hfQuant `json:"quantization_config"`
		Text struct {
			Q *hfQuant `json:"quantization_config"`
		} `json:"text_config"`
	}
	if json.Unmarshal(data, &c) != nil {
		return 0
	}
	for _, q := range []*hfQuant{c.Q, c.Text.Q} {
		if q != nil && len(q.Block) == 2 && q.Block[0] == q.Block[1] && q.Block[0] > 0 {
			return q.Block[0]
		}
	}
	return 0
}
