// Command cudaplot draws decode tok/s against GPU expert-cache size from the
// sweep runs of tools/bench/cuda.sh (full.jsonl, labels sweep-K4-<routing>-<fraction>)
// as an SVG. A second file, optional, is an earlier run drawn as thin "before"
// lines:
//
//	go run ./tools/bench/cudaplot docs/bench/cuda-h200-2026-11-21b.jsonl docs/bench/cuda-h200-2026-11-21.jsonl > docs/cuda-cache-sweep.svg
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

type run struct {
	Label    string  `json:"label"`
	Decode   float64 `json:"decode_tok_s"`
	Floor    float64 `json:"decode_floor_ms"`
	Counters struct {
		Hit float64 `json:"gpu_hit_rate"`
	} `json:"decode_counters"`
}

type pt struct{ f, tok, floor, hit float64 }

func main() {
	if len(os.Args) != 2 && len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: cudaplot full.jsonl [before.jsonl] > plot.svg")
		os.Exit(2)
	}
	series, err := read(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var before map[string][]pt
	if len(os.Args) == 3 {
		if before, err = read(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	const W, H, L, B, T, R = 640, 400, 60, 50, 30, 150
	maxY := 0.0
	for _, s := range series {
		for _, p := range s {
			maxY = max(maxY, p.tok, p.floor)
		}
	}
	maxY = float64(int(maxY/50)+1) * 50
	x := func(f float64) float64 { return L + f*(W-L-R) }
	y := func(v float64) float64 { return H - B - v/maxY*(H-B-T) }
	fmt.Printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Printf(`<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="18" font-size="14">decode tok/s vs GPU expert cache (397B shape, 32 experts/layer, K=4, H200; rest in pinned host RAM)</text>`+"\n", L-40)
	fmt.Printf(`<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/><line x1="%g" y1="%g" x2="%g" y2="%g" stroke="black"/>`+"\n",
		x(0), y(0), x(1), y(0), x(0), y(0), x(0), y(maxY))
	for _, f := range []float64{0, 0.125, 0.25, 0.5, 0.75, 1} {
		fmt.Printf(`<text x="%g" y="%g" text-anchor="middle">%g%%</text>`+"\n", x(f), y(0)+16, f*100)
	}
	for v := 0.0; v <= maxY; v += maxY / 5 {
		fmt.Printf(`<text x="%g" y="%g" text-anchor="end">%g</text><line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#ddd"/>`+"\n", x(0)-6, y(v)+4, v, x(0), y(v), x(1), y(v))
	}
	fmt.Printf(`<text x="%g" y="%d" text-anchor="middle">GPU cache, share of all experts</text>`+"\n", x(0.5), H-12)
	colors := map[string]string{"uniform": "#1f77b4", "skewed": "#d62728"}
	names := make([]string, 0, len(series))
	for n := range series {
		names = append(names, n)
	}
	sort.Strings(names)
	for i, n := range names {
		s := series[n]
		sort.Slice(s, func(a, b int) bool { return s[a].f < s[b].f })
		var meas, floor []string
		for _, p := range s {
			meas = append(meas, fmt.Sprintf("%g,%g", x(p.f), y(p.tok)))
			floor = append(floor, fmt.Sprintf("%g,%g", x(p.f), y(p.floor)))
			fmt.Printf(`<circle cx="%g" cy="%g" r="3" fill="%s"/><text x="%g" y="%g" font-size="10" fill="%s">%.0f%% hits</text>`+"\n",
				x(p.f), y(p.tok), colors[n], x(p.f)+4, y(p.tok)-6, colors[n], 100*p.hit)
		}
		fmt.Printf(`<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(meas, " "), colors[n])
		if b := before[n]; len(b) > 0 {
			sort.Slice(b, func(i, j int) bool { return b[i].f < b[j].f })
			var old []string
			for _, p := range b {
				old = append(old, fmt.Sprintf("%g,%g", x(p.f), y(p.tok)))
			}
			fmt.Printf(`<polyline points="%s" fill="none" stroke="%s" stroke-opacity="0.4"/>`+"\n", strings.Join(old, " "), colors[n])
		}
		fmt.Printf(`<polyline points="%s" fill="none" stroke="%s" stroke-dasharray="4 3"/>`+"\n", strings.Join(floor, " "), colors[n])
		ly := float64(T + 20 + 36*i)
		fmt.Printf(`<line x1="%d" y1="%g" x2="%d" y2="%g" stroke="%s" stroke-width="2"/><text x="%d" y="%g">%s measured</text>`+"\n", W-R+10, ly, W-R+30, ly, colors[n], W-R+34, ly+4, n)
		fmt.Printf(`<line x1="%d" y1="%g" x2="%d" y2="%g" stroke="%s" stroke-dasharray="4 3"/><text x="%d" y="%g">%s floor</text>`+"\n", W-R+10, ly+16, W-R+30, ly+16, colors[n], W-R+34, ly+20, n)
	}
	if before != nil {
		ly := float64(T + 20 + 36*len(names))
		fmt.Printf(`<line x1="%d" y1="%g" x2="%d" y2="%g" stroke="gray" stroke-opacity="0.4"/><text x="%d" y="%g">before (thin)</text>`+"\n", W-R+10, ly, W-R+30, ly, W-R+34, ly+4)
	}
	fmt.Println("</svg>")
}

// read returns the sweep runs of a results file by routing.
func read(name string) (map[string][]pt, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	series := map[string][]pt{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r run
		if json.Unmarshal(sc.Bytes(), &r) != nil || !strings.HasPrefix(r.Label, "sweep-") {
			continue
		}
		parts := strings.Split(r.Label, "-") // sweep K4 routing fraction
		fr, err := strconv.ParseFloat(parts[len(parts)-1], 64)
		if err != nil {
			continue
		}
		series[parts[2]] = append(series[parts[2]], pt{fr, r.Decode, 1e3 / r.Floor, r.Counters.Hit})
	}
	return series, sc.Err()
}
