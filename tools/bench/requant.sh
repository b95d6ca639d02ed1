#!/usr/bin/env bash
# Benchmark of fmoe requant (make bench-requant): experts/s and GB/s of
#   - fmoe requant --method minmax and --method mse,
#   - cp (+ sync) of the same input bytes,
#   - flash-moe's metal_infer/repack_experts_2bit.py on the same input, when
#     python3 with numpy and .flashmoe/repack_experts_2bit.py are present
#     (the script is copied there from a flash-moe checkout, never committed;
#     tools/reference/flashmoe_goldens.sh does it),
# all in the same run, on a synthetic 4-bit expert set at the Qwen3.5-397B
# expert shape (hidden 4096, intermediate 1024, group 64; 7,077,888 bytes per
# expert), layer layout (flash-moe's), EXPERTS experts of one layer.
#
#   tools/bench/requant.sh                      # builds bin/fmoe and bin/gen4bit if go exists
#   FMOE=bin/fmoe GEN=bin/gen4bit EXPERTS=64 WORK=out/bench-requant tools/bench/requant.sh
#
# The input is read from the page cache by every contender (it was just
# written or read); outputs are synced (fmoe fsyncs; cp is followed by sync).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
FMOE=${FMOE:-bin/fmoe}
GEN=${GEN:-bin/gen4bit}
EXPERTS=${EXPERTS:-64}
WORK=${WORK:-out/bench-requant}
PY=${PYTHON:-python3}
if command -v go >/dev/null; then
  CGO_ENABLED=0 go build -o "$FMOE" ./cmd/fmoe
  CGO_ENABLED=0 go build -o "$GEN" ./tools/bench/gen4bit
fi
IN=$WORK/model/packed_experts
if [ ! -f "$IN/layout.json" ] || ! grep -q "\"num_experts\": $EXPERTS," "$IN/layout.json"; then
  rm -rf "$WORK" && mkdir -p "$WORK"
  "$GEN" -o "$IN" -experts "$EXPERTS"
fi
BYTES=$(stat -c %s "$IN/layer_00.bin")
CORES=$(nproc)
echo "machine: $(uname -m), $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "input: $EXPERTS experts x 7077888 bytes = $BYTES bytes (layer layout, 397B shape)"
cat "$IN/layer_00.bin" > /dev/null   # warm the page cache for everyone

now() { date +%s.%N; }
report() { # name seconds
  awk -v n="$1" -v s="$2" -v b="$BYTES" -v e="$EXPERTS" \
    'BEGIN { printf "%-22s %8.2f s  %9.1f experts/s  %7.3f GB/s\n", n, s, e/s, b/1e9/s }'
}
rate() { awk -v s="$1" -v e="$EXPERTS" 'BEGIN { print e/s }'; }

rm -rf "$WORK/cp" && mkdir -p "$WORK/cp"
t0=$(now); cp "$IN/layer_00.bin" "$WORK/cp/"; sync; t1=$(now)
T_CP=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b-a }')
report "cp + sync" "$T_CP"

for m in minmax mse; do
  rm -rf "$WORK/fmoe_$m"
  t0=$(now); "$FMOE" requant --to 2bit "$IN" -o "$WORK/fmoe_$m" --method "$m" --quiet; t1=$(now)
  T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b-a }')
  report "fmoe requant $m" "$T"
  [ $m = minmax ] && T_MINMAX=$T
  awk '/"all"/ { f = 1 } f && /"rmse"/ { gsub(/[",]/, ""); print "  rmse vs 4-bit:", $2; exit }' \
    "$WORK/fmoe_$m/requant_report.json"
done
awk -v c="$T_CP" -v f="$T_MINMAX" 'BEGIN { printf "fmoe minmax / cp throughput: %.2f\n", c/f }'

if [ -f .flashmoe/repack_experts_2bit.py ] && $PY -c 'import numpy' 2>/dev/null; then
  rm -rf "$WORK/py"
  t0=$(now)
  $PY .flashmoe/repack_experts_2bit.py --model "$WORK/model" --layer 0 --experts "$EXPERTS" \
    --output "$WORK/py" > "$WORK/py.log"
  t1=$(now)
  T_PY=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b-a }')
  report "flash-moe script" "$T_PY"
  awk -v p="$T_PY" -v f="$T_MINMAX" 'BEGIN { printf "fmoe minmax / flash-moe script: %.1fx\n", p/f }'
  if cmp -s "$WORK/py/layer_00.bin" "$WORK/fmoe_minmax/layer_00.bin"; then
    echo "outputs: fmoe minmax == flash-moe script (byte-identical)"
  else
    echo "outputs: DIFFER from flash-moe's script" >&2
    exit 1
  fi
else
  echo "flash-moe script: skipped (needs $PY with numpy and .flashmoe/repack_experts_2bit.py)"
fi
