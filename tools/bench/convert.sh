#!/usr/bin/env bash
# make bench-convert: throughput and peak RSS of fmoe extract and fmoe pack-experts
# on a synthetic checkpoint with full-size experts (hidden 4096, moe intermediate
# 1024, 4-bit, group 64), beside cp of the same bytes on the same disk in the same
# run. Usage: tools/bench/convert.sh [FMOE_BINARY] (env BENCH_DIR, default out/bench).
# Page cache is not dropped: all timings are warm-cache (each input is read once
# before the timed runs), so the comparison is CPU/memory/write-path bound.
set -euo pipefail
cd "$(dirname "$0")/../.."
FMOE=${1:-bin/fmoe}
D=${BENCH_DIR:-out/bench}
LAYERS=${BENCH_LAYERS:-2}
EXPERTS=${BENCH_EXPERTS:-64}
HF=$D/hf-397b-shape-L${LAYERS}-E${EXPERTS}
mkdir -p "$D"
if [ ! -f "$HF/config.json" ]; then
  echo "synthesizing $HF (once; reused by later runs)"
  "$FMOE" synth -o "$HF" --preset 397b-shape --layers "$LAYERS" --experts "$EXPERTS" -q
fi
rm -rf "$D/cp" "$D/model" "$D/packed" "$D/packed-layer"
cat "$HF"/*.safetensors > /dev/null   # warm the cache for every contender alike

now() { date +%s.%N; }
# timed NAME BYTES CMD...: runs CMD under /usr/bin/time -v, prints GB/s and peak RSS.
declare -A GBS RSS ALL MAXRSS
timed() {
  local name=$1 bytes=$2; shift 2
  local t0 t1 log="$D/time-${name//[^a-z]/_}.log"
  sync   # no dirty pages from earlier steps are flushed inside the timing
  t0=$(now)
  /usr/bin/time -v -o "$log" "$@" > /dev/null
  t1=$(now)
  GBS[$name]=$(awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN{printf "%.2f", b/1e9/(z-a)}')
  RSS[$name]=$(awk -F': ' '/Maximum resident set size/{printf "%.0f", $2/1024}' "$log")
  ALL[$name]="${ALL[$name]:-} ${GBS[$name]}"; MAXRSS[$name]="${MAXRSS[$name]:-} ${RSS[$name]}"
  printf '%-28s %8.2f GB  %6.2f s  %6s GB/s  peak RSS %5s MiB\n' "$name" \
    "$(awk -v b="$bytes" 'BEGIN{print b/1e9}')" "$(awk -v a="$t0" -v z="$t1" 'BEGIN{print z-a}')" "${GBS[$name]}" "${RSS[$name]}"
}

SRC_BYTES=$(cat "$HF"/*.safetensors | wc -c)
W=$("$FMOE" extract "$HF" -o "$D/probe" --json | sed 's/.*"bytes":\([0-9]*\).*/\1/'); rm -rf "$D/probe"
P=$(( LAYERS * EXPERTS * 7077888 ))
ROUNDS=${BENCH_ROUNDS:-3}
# Contenders run interleaved, ROUNDS times; the summary takes each one's median,
# since this disk is shared with other work.
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  mkdir -p "$D/cp"
  timed cp "$SRC_BYTES" cp "$HF"/*.safetensors "$D/cp/"; rm -rf "$D/cp"; mkdir -p "$D/cp"
  timed cp_sync "$SRC_BYTES" sh -c "cp $HF/*.safetensors $D/cp/ && sync -f $D/cp/*"; rm -rf "$D/cp"
  timed extract "$W" "$FMOE" extract "$HF" -o "$D/model" -q; rm -rf "$D/model"
  timed pack_expert "$P" "$FMOE" pack-experts "$HF" --bits 4 -o "$D/packed" -q
  timed verify "$P" "$FMOE" verify "$D/packed" -q; rm -rf "$D/packed"
  timed pack_layer "$P" "$FMOE" pack-experts "$HF" --bits 4 --layout layer -o "$D/packed-layer" -q; rm -rf "$D/packed-layer"
done
med() { tr ' ' '\n' <<<"${ALL[$1]}" | grep . | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "medians over $ROUNDS rounds (GB/s, peak RSS MiB):"
for n in cp cp_sync extract pack_expert pack_layer verify; do
  printf '  %-12s %6s GB/s  %5s MiB\n' "$n" "$(med "$n")" "$(tr ' ' '\n' <<<"${MAXRSS[$n]}" | sort -g | tail -1)"
done
awk -v cp="$(med cp)" -v cs="$(med cp_sync)" -v e="$(med extract)" -v p="$(med pack_expert)" -v l="$(med pack_layer)" 'BEGIN{
  printf "ratio vs cp:        extract %.0f%%, pack-experts expert layout %.0f%%, layer layout %.0f%% (target >= 80%%)\n", 100*e/cp, 100*p/cp, 100*l/cp
  printf "ratio vs cp + sync: extract %.0f%%, pack-experts expert layout %.0f%%, layer layout %.0f%%\n", 100*e/cs, 100*p/cs, 100*l/cs }'
echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(df -h "$D" | awk 'NR==2{print $1}') ($(findmnt -no FSTYPE -T "$D" 2>/dev/null || echo ?)); $(date -u +%Y-%m-%dT%H:%MZ)"
