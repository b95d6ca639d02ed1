#!/bin/sh
# Decode-focused CUDA check and timing, run ON the GPU machine from the
# repository root with the static binaries of `make bench-cuda` in .devbin:
# the correctness checks (conformance, kernel variants, mixers at the 397B
# head sizes with and without CUDA graphs, HF parity and engine tests on the
# CUDA backend), then the 397B-shape synthetic model (EXPERTS per layer) and
# whole-model decode: a per-kernel GPU-event profile of resident decode
# (FMOE_CUDA_PROFILE=1) and the (a) resident runs with graphs on and off.
# RUNS adds more `fmoe bench` runs: lines "label|flags"; FIRST runs lines
# "label|env|flags" before the profile (env e.g. FMOE_CUDA_FUSE=0); SKIPA=1
# leaves out the default (a) runs; SKIPCHECK=1 the correctness checks.
set -u
D=${DEVBIN:-$PWD/.devbin}
OUT=${OUT:-/tmp/fmoe-bench}
W=${WORK:-/tmp/fmoe397}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
date -u +%Y-%m-%dT%H:%MZ
t0=$(date +%s)
if [ -z "${SKIPCHECK-}" ]; then
	echo "== check"
	(cd cuda && FMOE_REQUIRE_CUDA=1 "$D/cuda.test" -test.run 'Conformance|MatMulKernels|SmallCacheChunks|MixersLarge|MoELarge|FusedDecode|CachePolicy|QMX|SplitMoE|MergedShared|RouteOverride|Launch' -test.count 1 -test.v 2>&1) >"$OUT/check.txt"
	grep -E "^(--- FAIL|FAIL|ok|PASS)|graph replays|panic|error" "$OUT/check.txt" | head -20
	(cd runtime && FMOE_BACKEND=cuda "$D/runtime.test" -test.count 1 2>&1 | tail -4)
	echo "== check $(( $(date +%s) - t0 )) s"
fi
. "$(dirname "$0")/cuda_model.sh" # HBM, H2D; the model in $W/model
bench() { # label, env, flags
	l=$1; e=$2; shift 2
	echo "== $l" >>"$OUT/decode.err"
	r=$(env $e "$D/fmoe" bench --model "$W/model" --backend cuda --mode full --json --hbm-gbs "$HBM" --h2d-gbs "${H2D:-50}" "$@" 2>"$OUT/last.err")
	cat "$OUT/last.err" >>"$OUT/decode.err"
	if [ -n "$r" ]; then
		echo "$r" | tr -d '\n' | sed "s/^{/{\"label\":\"$l\",/" >>"$OUT/decode.jsonl"; echo >>"$OUT/decode.jsonl"
		echo "$r" | awk -v l="$l" '/"decode_tok_s"|"prefill_tok_s"|"decode_E"|"prefill_E"|"gpu_hit_rate"|"decode_floor_ms"/ {gsub(/[",]/,""); s=s" "$1$2} END {print l":"s}'
	else echo "$l: FAILED: $(tail -3 "$OUT/last.err")"; fi
	rm -f "$OUT/last.err"
}
# FIRST: runs named in FIRST ("label|env|flags" lines) before the profile.
echo "${FIRST-}" | while IFS='|' read -r l e f; do
	[ -n "$l" ] && bench "$l" "${e:-X=1}" $f
done
bench prof-K4 FMOE_CUDA_PROFILE=1 -k 4 --prefill 1 --tokens 16 --warmup 4 --routing uniform
grep -A40 "cuda profile" "$OUT/decode.err" | head -32
if [ -n "${PROF_OLD-}" ]; then
	bench prof-K4-olddelta "FMOE_CUDA_PROFILE=1 FMOE_CUDA_DELTA2=0" -k 4 --prefill 1 --tokens 16 --warmup 4 --routing uniform
	sed -n '/== prof-K4-olddelta/,$p' "$OUT/decode.err" | grep -A12 "cuda profile" | head -12
fi
P=${PREFILL:-128}; DT=${DECODE:-32}
[ -n "${SKIPA-}" ] || for k in 4 10; do
	bench "a-resident-K$k-uniform" X=1 -k $k --prefill "$P" --tokens "$DT" --routing uniform
	[ -n "${EAGER-}" ] && bench "a-resident-K$k-uniform-eager" FMOE_CUDA_GRAPHS=0 -k $k --prefill "$P" --tokens "$DT" --routing uniform
done
echo "${RUNS-}" | while IFS='|' read -r l f; do
	[ -n "$l" ] && bench "$l" X=1 $f
done
echo "== done $(( $(date +%s) - t0 )) s"
