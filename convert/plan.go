package convert

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/fmoe/fmoe/checkpoint"
	"github.com/fmoe/fmoe/formats"
)

// Align is the alignment of every tensor in model_weights.bin.
const Align = 64

// ErrDuplicateName reports two source tensors that map to the same manifest
// name once "language_model." is stripped.
var ErrDuplicateName = errors.New("convert: two tensors share a manifest name")

// Skip reasons, as counted in Plan.Skipped.
const (
	SkipVision = "vision"
	SkipMTP    = "mtp"
	SkipExpert = "routed expert"
)

// skipRules select the tensors extract leaves out, first match wins. The
// vision and expert rules are flash-moe's; mtp (multi-token-prediction
// heads, absent from MLX checkpoints) is fmoe's addition.
var skipRules = []struct {
	re     *regexp.Regexp
	reason string
}{
	{regexp.MustCompile(`^(vision_tower|model\.visual)`), SkipVision},
	{regexp.MustCompile(`(^|\.)mtp\.`), SkipMTP},
	{regexp.MustCompile(`\.switch_mlp\.(gate_proj|up_proj|down_proj)\.(weight|scales|biases)$`), SkipExpert},
}

// SkipReason returns why extract leaves the tensor out, or "" if it keeps it.
func SkipReason(name string) string {
	for _, r := range skipRules {
		if r.re.MatchString(name) {
			return r.reason
		}
	}
	return ""
}

// ManifestName strips the "language_model." prefix, as flash-moe does.
func ManifestName(name string) string { return strings.TrimPrefix(name, "language_model.") }

// Entry is one tensor of model_weights.bin.
type Entry struct {
	Name   string         // manifest name
	Source checkpoint.Ref // where the bytes come from (Source.Info.Name is the original name)
	Offset int64          // in model_weights.bin
}

// Plan is the complete layout of model_weights.bin.
type Plan struct {
	Entries []Entry        // in file order (sorted original names)
	Size    int64          // file size: end of the last tensor
	Skipped map[string]int // reason → count of tensors left out
}

// PlanExtract selects the non-expert tensors of a checkpoint inventory and
// fixes their offsets. It reads nothing but the map.
func PlanExtract(tensors map[string]checkpoint.Ref) (*Plan, error) {
	p := &Plan{Skipped: map[string]int{}}
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		if r := SkipReason(n); r != "" {
			p.Skipped[r]++
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names) // byte order of UTF-8 == Python's code-point order
	seen := make(map[string]string, len(names))
	var off int64
	for _, n := range names {
		ref := tensors[n]
		ref.Info.Name = n
		m := ManifestName(n)
		if prev, dup := seen[m]; dup {
			return nil, fmt.Errorf("%w: %q and %q both become %q", ErrDuplicateName, prev, n, m)
		}
		seen[m] = n
		if ref.Info.Size < 0 {
			return nil, fmt.Errorf("convert: tensor %q in %s has negative size", n, ref.File)
		}
		off = (off + Align - 1) / Align * Align
		p.Entries = append(p.Entries, Entry{Name: m, Source: ref, Offset: off})
		off += ref.Info.Size
	}
	p.Size = off
	return p, nil
}

// Manifest returns model_weights.json's content for the plan. model is the
// "model" field (flash-moe writes the input path); cfg fills the config block.
func (p *Plan) Manifest(model string, cfg *formats.Config) *formats.Manifest {
	m := &formats.Manifest{Model: model, NumTensors: len(p.Entries), Tensors: make(map[string]formats.ManifestTensor, len(p.Entries))}
	for _, e := range p.Entries {
		m.Tensors[e.Name] = formats.ManifestTensor{Offset: e.Offset, Size: e.Source.Info.Size, Shape: shapeOf(e.Source.Info.Shape), DType: string(e.Source.Info.DType)}
	}
	if cfg != nil {
		m.Config = formats.ManifestConfig(cfg)
	}
	return m
}

func shapeOf(s []int64) []int64 {
	if s == nil {
		return []int64{}
	}
	return s
}
