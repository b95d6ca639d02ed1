package requant

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// ReportFile is the quality report written into the output directory.
const ReportFile = "requant_report.json"

// ProjReport is the error of one projection against the 4-bit weights.
type ProjReport struct {
	RMSE   float64 `json:"rmse"`
	MaxAbs float64 `json:"max_abs"`
	N      int64   `json:"n"`
}

// LayerReport holds one layer's errors per projection.
type LayerReport struct {
	Layer int                   `json:"layer"`
	Proj  map[string]ProjReport `json:"proj"` // gate_proj, up_proj, down_proj
	All   ProjReport            `json:"all"`
}

// Report is requant_report.json: the error of the 2-bit experts against the
// 4-bit weights they came from (values as read back: q2·s2 + b2 with the
// stored bf16 s2, b2), per layer and projection and in total.
type Report struct {
	Format   string                `json:"format"` // "fmoe-requant-report/1"
	Method   Method                `json:"method"`
	Bits     int                   `json:"bits"` // 2
	Source   string                `json:"source"`
	Complete bool                  `json:"complete"` // false: an interrupted run (resume it)
	Experts  int                   `json:"experts"`  // experts measured
	Layers   []LayerReport         `json:"layers"`
	Total    map[string]ProjReport `json:"total"`
	All      ProjReport            `json:"all"`
}

func projReport(s Stats) ProjReport {
	mx := s.MaxAbs
	if math.IsNaN(mx) || math.IsInf(mx, 0) {
		mx = -1 // JSON has no NaN; -1 marks a non-finite error
	}
	r := s.RMSE()
	if math.IsNaN(r) || math.IsInf(r, 0) {
		r = -1
	}
	return ProjReport{RMSE: r, MaxAbs: mx, N: s.N}
}

// newReport folds per-expert stats ([layer index][expert][proj], summed in
// that fixed order so the report does not depend on the worker count).
func newReport(m Method, source string, layers []int, st [][][3]Stats) *Report {
	r := &Report{Format: "fmoe-requant-report/1", Method: m, Bits: 2, Source: source, Total: map[string]ProjReport{}}
	var total [3]Stats
	for li, l := range layers {
		var ls [3]Stats
		for _, e := range st[li] {
			for p := range e {
				ls[p].Merge(e[p])
			}
			if e[0].N > 0 {
				r.Experts++
			}
		}
		lr := LayerReport{Layer: l, Proj: map[string]ProjReport{}}
		var all Stats
		for p, name := range Projections {
			lr.Proj[name] = projReport(ls[p])
			all.Merge(ls[p])
			total[p].Merge(ls[p])
		}
		lr.All = projReport(all)
		r.Layers = append(r.Layers, lr)
	}
	var all Stats
	for p, name := range Projections {
		r.Total[name] = projReport(total[p])
		all.Merge(total[p])
	}
	r.All = projReport(all)
	return r
}

// JSON returns the report as indented JSON with a trailing newline.
func (r *Report) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	return append(b, '\n'), err
}

// WriteText prints the report as a table: one line per layer, then the total.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "layer\tgate rmse\tgate max\tup rmse\tup max\tdown rmse\tdown max\tall rmse\t\n")
	line := func(label string, proj map[string]ProjReport, all ProjReport) {
		fmt.Fprintf(tw, "%s\t", label)
		for _, p := range Projections {
			fmt.Fprintf(tw, "%.4g\t%.4g\t", proj[p].RMSE, proj[p].MaxAbs)
		}
		fmt.Fprintf(tw, "%.4g\t\n", all.RMSE)
	}
	for _, l := range r.Layers {
		line(fmt.Sprint(l.Layer), l.Proj, l.All)
	}
	line("total", r.Total, r.All)
	return tw.Flush()
}
