#!/bin/sh
# CUDA checks and benchmarks, run ON the GPU machine from the repository root
# with the static binaries built elsewhere (`make bench-cuda` builds them):
#   .devbin/cuda.test    CGO_ENABLED=0 go test -c -o .devbin/cuda.test ./cuda/
#   .devbin/runtime.test CGO_ENABLED=0 go test -c -o .devbin/runtime.test ./runtime/
#   .devbin/fmoe         CGO_ENABLED=0 go build -o .devbin/fmoe ./cmd/fmoe
#
# STAGES (default "check micro full"):
#   check  conformance suite, kernel variants, small-cache, fused-decode and
#          persistent-matvec (qmx) tests (cuda),
#          HF parity and engine tests on the CUDA backend (runtime)
#   micro  HBM and pinned host-to-device copy bandwidth, decode matvec
#          variants, prefill GEMM, one MoE layer (BENCH selects, BENCHTIME)
#   full   whole model: fmoe synth --preset 397b-shape --experts N (N from
#          the free disk, at most EXPERTS=32), pack-experts, extract, then
#          fmoe bench --mode full for (a) all experts resident, (b) GPU cache
#          capped at CAP_GB with the rest in a pinned host tier, (c) cold from
#          disk (page cache dropped, O_DIRECT, GPU cache capped), uniform and
#          skewed routing, K=4 and K=10, and a sweep of GPU cache sizes
#          (REUSE=1 keeps the model in WORK and reuses one found there).
# Results: one JSON object per run in $OUT/full.jsonl, logs in $OUT.
set -u
D=${DEVBIN:-$PWD/.devbin}
OUT=${OUT:-/tmp/fmoe-bench}
STAGES=${STAGES:-check micro full}
mkdir -p "$OUT"
say() { echo "== $*"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
date -u +%Y-%m-%dT%H:%MZ
nproc; free -g | head -2; df -h "$PWD" /tmp | tail -2

for st in $STAGES; do case $st in
check)
	say check: cuda
	(cd cuda && FMOE_REQUIRE_CUDA=1 "$D/cuda.test" -test.run 'Conformance|MatMulKernels|SmallCacheChunks|MixersLarge|MoELarge|MoESlots|FusedDecode|CachePolicy|QMX|SplitMoE|MergedShared|RouteOverride|Launch' -test.count 1 2>&1 | tail -15) | tee "$OUT/check.txt"
	say check: runtime on cuda
	(cd runtime && FMOE_BACKEND=cuda "$D/runtime.test" -test.count 1 2>&1 | tail -8) | tee -a "$OUT/check.txt"
	;;
micro)
	say micro
	(cd cuda && "$D/cuda.test" -test.run '^$' -test.bench "${BENCH:-.}" -test.benchtime "${BENCHTIME:-2x}" 2>&1) | tee "$OUT/micro.txt" | grep -E "Benchmark|ok|FAIL|hits"
	;;
full)
	F="$D/fmoe"
	W=${WORK:-$PWD/.bench397}
	[ -n "${REUSE-}" ] && [ -f "$W/model/model_weights.json" ] || { rm -rf "$W"; mkdir -p "$W"; }
	# Bandwidth ceilings (GB/s) from the copy benchmarks.
	if ! grep -q BenchmarkCopyD2D "$OUT/micro.txt" 2>/dev/null; then
		(cd cuda && "$D/cuda.test" -test.run '^$' -test.bench 'Copy' -test.benchtime 2x 2>&1) >>"$OUT/micro.txt"
	fi
	HBM=$(awk '/BenchmarkCopyD2D/ {for(i=1;i<=NF;i++) if($(i)=="GB/s") print $(i-1)}' "$OUT/micro.txt" | tail -1)
	H2D=$(awk '/BenchmarkCopyH2D/ {for(i=1;i<=NF;i++) if($(i)=="GB/s") print $(i-1)}' "$OUT/micro.txt" | tail -1)
	# Experts per layer: the checkpoint (5.7 GB + N*0.425 GB) and its packed
	# copy (the same again) must fit with 6 GB to spare.
	if [ -f "$W/model/model_weights.json" ]; then
		# REUSE=1: a model left by an earlier run (tools/bench/cuda_decode.sh makes the same one)
		N=$(ls "$W"/model/packed_experts/ | grep -c '^layer_00_')
		say "full: reusing $W/model, $N experts per layer; HBM $HBM GB/s, H2D $H2D GB/s"
	else
		FREE=$(df -Pk "$W" | awk 'NR==2 {print int($4/1048576)}')
		N=$(awk -v f="$FREE" -v m="${EXPERTS:-32}" 'BEGIN {n=int(((f-6)/2-5.7)/0.425); n=n-n%4; if(n>m)n=m; print n}')
		say "full: $FREE GB free -> $N experts per layer; HBM $HBM GB/s, H2D $H2D GB/s"
		t0=$(date +%s)
		"$F" synth -o "$W/hf" --preset 397b-shape --experts "$N" --quiet || exit 1
		"$F" pack-experts "$W/hf" --bits 4 -o "$W/model/packed_experts" --quiet || exit 1
		"$F" extract "$W/hf" -o "$W/model" --quiet || exit 1
		rm -rf "$W/hf"
		say "synth+pack+extract $(( $(date +%s) - t0 )) s"; du -sh "$W/model" "$W/model/packed_experts"
	fi
	# Disk read bandwidth of the expert files, cold (16 parallel O_DIRECT
	# readers, one expert file each, 960 files = 6.8 GB).
	sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null && DROP=yes || DROP=no
	ls "$W"/model/packed_experts/layer_*.bin | awk 'NR%2==0' | head -960 >"$W/files"
	ts=$(date +%s.%N)
	xargs -P 16 -I{} dd if={} of=/dev/null bs=7077888 iflag=direct status=none <"$W/files"
	te=$(date +%s.%N)
	DISK=$(awk -v n="$(wc -l <"$W/files")" -v a="$ts" -v b="$te" 'BEGIN {printf "%.2f", n*7077888/(b-a)/1e9}')
	say "disk (drop_caches $DROP): $DISK GB/s"
	EG=$(awk -v n="$N" 'BEGIN {print n*60*7077888/1073741824}') # all experts, GiB
	bench() { # label, then fmoe bench flags
		l=$1; shift
		r=$("$F" bench --model "$W/model" --backend cuda --mode full --json --hbm-gbs "$HBM" --h2d-gbs "$H2D" --disk-gbs "$DISK" "$@" 2>"$OUT/err.txt")
		if [ -n "$r" ]; then
			echo "$r" | tr -d '\n' | sed "s/^{/{\"label\":\"$l\",/" >>"$OUT/full.jsonl"; echo >>"$OUT/full.jsonl"
			echo "$r" | awk -v l="$l" '/"decode_tok_s"|"prefill_tok_s"|"decode_E"|"prefill_E"|"gpu_hit_rate"|"decode_floor_ms"/ {gsub(/[",]/,""); s=s" "$1$2} END {print l":"s}'
		else echo "$l: FAILED: $(tail -3 "$OUT/err.txt")"; fi
	}
	P=${PREFILL:-256}
	DT=${DECODE:-32}
	CAP=${CAP_GB:-$(awk -v e="$EG" 'BEGIN {printf "%.2f", e/4}')}
	say "runs: prefill $P, decode $DT; all experts $EG GiB, capped GPU cache $CAP GiB"
	say "per-layer GPU-event timing, all resident, K=4 (fmoe run --timing)"
	"$F" run --model "$W/model" --backend cuda -k 4 --prompt "The capital of France is" --tokens 16 --timing 2>&1 >/dev/null |
		grep -E "prefill|total|embed|experts:" | tee "$OUT/timing.txt"
	for k in 4 10; do
		bench "a-resident-K$k-uniform" -k $k --prefill "$P" --tokens "$DT" --routing uniform
		# (b): experts not yet in the host tier come from disk; drop the page
		# cache first so that those reads are the disk's (as the floor's disk
		# term assumes), not whatever an earlier stage left cached
		sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
		bench "b-cap-K$k-uniform" -k $k --prefill "$P" --tokens "$DT" --routing uniform --gpu-cache-gb "$CAP" --host-cache-gb 200 --warmup 64
		sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
		bench "b-cap-K$k-skewed" -k $k --prefill "$P" --tokens "$DT" --routing skewed --gpu-cache-gb "$CAP" --host-cache-gb 200 --warmup 64
	done
	for k in 4 10; do
		sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
		bench "c-cold-K$k-skewed" -k $k --prefill 32 --tokens 16 --routing skewed --gpu-cache-gb "$CAP" --direct-io --warmup 0
	done
	if [ -n "${SWEEP-1}" ]; then
		for f in 0.125 0.25 0.5 1; do
			g=$(awk -v e="$EG" -v f="$f" 'BEGIN {printf "%.2f", e*f+0.05}')
			for rt in uniform skewed; do
				bench "sweep-K4-$rt-$f" -k 4 --prefill 1 --tokens "$DT" --routing "$rt" --gpu-cache-gb "$g" --host-cache-gb 200 --warmup 64
			done
		done
	fi
	[ -n "${REUSE-}" ] || rm -rf "$W"
	;;
esac; done
