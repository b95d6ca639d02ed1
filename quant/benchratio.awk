# benchratio.awk: summarise `go test -bench` output of package quant
# (make bench-matvec). For every BenchmarkMatVec<bits>/<shape> it prints the
# median wall-clock MB/s over all runs, the median of the matching
# BenchmarkMemcpy/<bits>/<shape> (same bytes, all cores, same runs) and their
# ratio, then the same for MB/cpu-s (throughput per second of CPU time, which
# other load on the machine does not skew; see bench_test.go).
/^Benchmark/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	for (i = 2; i <= NF; i++) {
		if ($i == "MB/s") { v[name, ++n[name]] = $(i-1); names[name] = 1 }
		if ($i == "MB/cpu-s") { c[name, ++nc[name]] = $(i-1) }
	}
}
function median(arr, cnt, k,    m, i, j, t, a) {
	m = cnt[k]
	for (i = 1; i <= m; i++) a[i] = arr[k, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	if (m == 0) return 0
	return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}
function pct(a, b) { return b > 0 ? sprintf("%.0f%%", 100 * a / b) : "-" }
END {
	printf "%-20s %8s %8s %6s   %10s %10s %6s %5s\n", "benchmark", "MB/s", "memcpy", "ratio", "MB/cpu-s", "memcpy", "ratio", "runs"
	for (k in names) if (k ~ /^BenchmarkMatVec[0-9]+\//) {
		m = k; sub(/^BenchmarkMatVec/, "BenchmarkMemcpy/", m)
		if (!(m in names)) continue
		a = median(v, n, k); b = median(v, n, m); ca = median(c, nc, k); cb = median(c, nc, m)
		printf "%-20s %8.0f %8.0f %6s   %10.0f %10.0f %6s %5d\n", substr(k, 10), a, b, pct(a, b), ca, cb, pct(ca, cb), n[k] | "sort"
	}
	close("sort")
	for (k in names) if (k !~ /^Benchmark(MatVec[0-9]+|Memcpy)\//)
		printf "%-20s %8.0f %8s %6s   %10.0f\n", substr(k, 10), median(v, n, k), "", "", median(c, nc, k)
}
