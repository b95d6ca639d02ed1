#!/bin/sh
# qmmw4 (the dense prefill GEMM on the warpgroup MMA, kernels_wg.cu) on the
# GPU machine, from the repository root with the static binaries of
# `make bench-cuda` in .devbin: the kernel-variant test (every GEMM variant
# and the grouped MoE experts against the CPU backend), the runtime's tests on CUDA with qmmw4 on (HF
# parity included; RTWG="1 0" also with it off), the GEMM micro-benchmark at 32-128 tokens against
# qmma4m2p2, then whole-model prefill (397B shapes, EXPERTS per layer, all
# resident) with FMOE_CUDA_QMMA_WG=0 and 1 alternated, ROUNDS times (WGS
# names the settings: 0, 1, or 1e for qmmw4 with the experts on qmma), and
# decode under the settings of DECAB (default: the kernels built for sm_90
# and sm_90a). CHECKX: a regex of more cuda tests for the check; SKIPFULL:
# no whole-model runs; SKIPDEC: no decode runs.
set -u
D=${DEVBIN:-$PWD/.devbin}
OUT=${OUT:-/tmp/fmoe-bench}
W=${WORK:-/tmp/fmoe397}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
date -u +%Y-%m-%dT%H:%MZ
t0=$(date +%s)
ok=1
for swap in 0 1; do
	echo "== check (descriptor offsets exchanged: $swap)"
	(cd cuda && FMOE_REQUIRE_CUDA=1 FMOE_CUDA_SM90A=1 FMOE_CUDA_QMMW_SWAP=$swap "$D/cuda.test" -test.run 'QMMWLayout|MatMulKernels|MoELarge' -test.count 1 -test.v 2>&1) >"$OUT/check$swap.txt"
	grep -E "^(--- FAIL|FAIL|ok|PASS)|warpgroup|error |panic|cuda_test" "$OUT/check$swap.txt" | head -16
	if grep -q '^PASS' "$OUT/check$swap.txt"; then ok=0; break; fi
done
if [ -n "${CHECKX-}" ]; then # more cuda tests (a regex), run as they are
	(cd cuda && FMOE_REQUIRE_CUDA=1 "$D/cuda.test" -test.run "$CHECKX" -test.count 1 -test.v 2>&1) >"$OUT/checkx.txt"
	echo "== cuda.test -test.run '$CHECKX'"
	grep -E "^(--- FAIL|FAIL|PASS)|panic|cuda_test|fuse_test" "$OUT/checkx.txt" | grep -v 'outputs ' | head -16
	grep -q "^PASS" "$OUT/checkx.txt" || echo "CHECKX FAILED (measurements go on)"
fi
echo "== check $(( $(date +%s) - t0 )) s"
[ "$ok" = 0 ] || exit 1
[ "$swap" = 0 ] || { echo "qmmw4 passes only with the offsets exchanged: fix qmmwLBO/qmmwSBO"; exit 1; }
for wg in ${RTWG:-1}; do
	echo "== runtime.test on CUDA, FMOE_CUDA_QMMA_WG=$wg"
	(cd runtime && FMOE_BACKEND=cuda FMOE_CUDA_QMMA_WG=$wg "$D/runtime.test" -test.count 1 -test.v 2>&1) >"$OUT/runtime$wg.txt"
	grep -E "^(--- FAIL|FAIL|ok|PASS)|worst|HFParity" "$OUT/runtime$wg.txt" | head -12
done
(cd cuda && FMOE_CUDA_SM90A=1 "$D/cuda.test" -test.run '^$' -test.bench "${BENCH:-QMatVec/T=(32|64|128)/qmma-(m2|wg)}" -test.benchtime 1x 2>&1) >"$OUT/micro.txt"
grep -E "^Benchmark" "$OUT/micro.txt"
[ -n "${SKIPFULL-}" ] && exit 0
. "$(dirname "$0")/cuda_model.sh" # HBM, H2D; the model in $W/model
for r in $(seq "${ROUNDS:-2}"); do
	for k in ${KS:-4 10}; do
		for wg in ${WGS:-0 1}; do
			j=$(env FMOE_CUDA_QMMA_WG=${wg%e} $(case $wg in *e) echo FMOE_CUDA_QMMAE_WG=0;; esac) "$D/fmoe" bench --model "$W/model" --backend cuda --mode full --json --hbm-gbs "$HBM" -k "$k" \
				--prefill 128 --tokens 2 --routing uniform 2>"$OUT/err.txt")
			echo "$j" | tr -d '\n' >>"$OUT/prefill.jsonl"; echo >>"$OUT/prefill.jsonl"
			echo "round $r K=$k wg=$wg: $(echo "$j" | grep -oE '"prefill_(tok_s|E)": *[0-9.e+-]+' | tr -d '"\n ')" "$(tail -1 "$OUT/err.txt" | grep -i error)"
		done
	done
done
# decode is untouched by qmmw, but with it on the whole source builds for sm_90a:
# decode runs under the settings of DECAB (lines "label|env", default the sm_90
# and sm_90a builds), alternated DROUNDS times, at each K of DKS
DECAB=${DECAB:-"sm90|FMOE_CUDA_SM90A=0
sm90a|FMOE_CUDA_SM90A=1"}
[ -n "${SKIPDEC-}" ] || for r in $(seq "${DROUNDS:-1}"); do
	for k in ${DKS:-4}; do
		echo "$DECAB" | while IFS='|' read -r l e; do
			[ -n "$l" ] || continue
			j=$(env $e "$D/fmoe" bench --model "$W/model" --backend cuda --mode full --json --hbm-gbs "$HBM" -k "$k" \
				--prefill 1 --tokens 32 --routing uniform 2>"$OUT/err.txt")
			echo "$j" | tr -d '\n' | sed "s/^{/{\"label\":\"$l\",/" >>"$OUT/decode.jsonl"; echo >>"$OUT/decode.jsonl"
			echo "decode round $r K=$k $l: $(echo "$j" | grep -oE '"decode_(tok_s|E)": *[0-9.e+-]+' | tr -d '"\n ')" "$(tail -1 "$OUT/err.txt" | grep -i error)"
		done
	done
done
echo "== done $(( $(date +%s) - t0 )) s"
