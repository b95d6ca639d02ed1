# benchratio.awk: summarise `go test -bench` output of package quant
# (make bench-matvec). For every BenchmarkMatVec<bits>/<shape> it prints the
# median MB/s over all runs, the median of the matching BenchmarkMemcpy/<bits>/<shape>
# (same bytes, all cores, same run) and their ratio.
/^Benchmark/ {
	name = $1
	sub(/-[0-9]+$/, "", name)
	for (i = 2; i <= NF; i++) if ($i == "MB/s") { v[name, ++n[name]] = $(i-1); names[name] = 1 }
}
function median(k,    c, i, j, t, a) {
	c = n[k]
	for (i = 1; i <= c; i++) a[i] = v[k, i]
	for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
}
END {
	printf "%-32s %10s %10s %7s %5s\n", "benchmark", "MB/s", "memcpy", "ratio", "runs"
	for (k in names) if (k ~ /^BenchmarkMatVec[0-9]+\//) {
		m = k; sub(/^BenchmarkMatVec/, "BenchmarkMemcpy/", m)
		if (!(m in names)) continue
		a = median(k); b = median(m)
		printf "%-32s %10.0f %10.0f %6.0f%% %5d\n", substr(k, 10), a, b, 100 * a / b, n[k] | "sort"
	}
	close("sort")
	for (k in names) if (k !~ /^Benchmark(MatVec[0-9]+|Memcpy)\//)
		printf "%-32s %10.0f %10s %7s %5d\n", substr(k, 10), median(k), "", "", n[k]
}
