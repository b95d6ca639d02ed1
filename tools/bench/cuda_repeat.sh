#!/bin/sh
# Runs one GPU test many times under environment variants, ON the GPU machine
# from the repository root with .devbin carried (make bench-cuda builds it):
# for intermittent failures. Results are written to $OUT/repeat.txt as each
# variant finishes (nothing is lost when the call's time limit ends it).
#   TEST    test name regex (default ^TestFusedDecode$)
#   COUNT   runs per variant (default 20)
#   VARIANTS lines "label|env" (default: as is, FMOE_CUDA_PDL=0, FMOE_CUDA_FUSE=0, FMOE_CUDA_GRAPHS=0)
#   BIN     test binary (default .devbin/cuda.test)
#   LIMIT   seconds per variant (default 120)
# TestFusedDecode runs only the configurations FMOE_TEST_FUSED_CONFIGS lists
# (e.g. "0"; a variant's env can set it) and logs a hash of each one's
# outputs: the counts of distinct hashes show whether results vary.
# A variant's first run compiles the kernels when the kernel cache is cold
# (about 90 s on an H200); later runs of TestFusedDecode take about 5 s.
set -u
OUT=${OUT:-/tmp/fmoe-repeat}
mkdir -p "$OUT"
BIN=${BIN:-$PWD/.devbin/cuda.test}
TEST=${TEST:-^TestFusedDecode\$}
COUNT=${COUNT:-20}
LIMIT=${LIMIT:-120}
VARIANTS=${VARIANTS:-"default|X=1
pdl-off|FMOE_CUDA_PDL=0
fuse-off|FMOE_CUDA_FUSE=0
graphs-off|FMOE_CUDA_GRAPHS=0"}
echo "$VARIANTS" | while IFS='|' read -r label env; do
	[ -n "$label" ] || continue
	log="$OUT/repeat-$label.log"
	(cd cuda && env $env FMOE_REQUIRE_CUDA=1 timeout "$LIMIT" "$BIN" -test.run "$TEST" -test.count "$COUNT" -test.v >"$log" 2>&1)
	pass=$(grep -c '^--- PASS' "$log")
	fail=$(grep -c '^--- FAIL' "$log")
	echo "$label ($env): $pass passed, $fail failed" | tee -a "$OUT/repeat.txt"
	grep -E '_test.go:[0-9]+:' "$log" | grep -v ': outputs ' | sed 's/{Device[^}]*}//' | sort | uniq -c | head -5 | tee -a "$OUT/repeat.txt"
	# tests that log "config N: outputs HASH, worst relative error E (where)"
	# (TestFusedDecode): how many distinct results each configuration gave
	grep -oE 'config [0-9]+: outputs [0-9a-f]+, worst relative error [^ ]+ \([^)]*\)' "$log" | sort | uniq -c | tee -a "$OUT/repeat.txt"
done
