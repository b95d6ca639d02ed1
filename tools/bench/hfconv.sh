#!/usr/bin/env bash
# Benchmark of converting an original HF release (make bench-hfconv), issue 6:
#   1. BF16 -> 4-bit conversion compute, in GB/s of BF16 input, on one core and
#      on all cores (go test -bench ConvertBF16 in hfconv/, in-memory source,
#      expert-shaped rows of 4096 columns);
#   2. the disk read rate of the same machine in the same run: a 1 GiB file
#      read with dd after dropping the page cache (when permitted);
#   3. end to end: fmoe synth --format hf-bf16 (preset small, ~1.2 GB of BF16),
#      page cache dropped, then fmoe extract and pack-experts over it, with
#      their GB/s of input and peak RSS (/usr/bin/time -v).
#
#   tools/bench/hfconv.sh            # WORK=out/bench-hfconv BENCHTIME=3x
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
WORK=${WORK:-out/bench-hfconv}
BENCHTIME=${BENCHTIME:-3x}
FMOE=${FMOE:-bin/fmoe}
mkdir -p "$WORK"
if command -v go >/dev/null; then
  CGO_ENABLED=0 go build -o "$FMOE" ./cmd/fmoe
  go test -c -o "$WORK/hfconv.test" ./hfconv/
fi
drop() { sync; if echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then echo cold; else echo warm; fi; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%FT%TZ)"

echo "== 1. conversion compute (BF16 bytes in per second)"
"$WORK/hfconv.test" -test.run '^$' -test.bench 'ConvertBF16' -test.benchtime "$BENCHTIME" | grep -E '^Benchmark' | tee "$WORK/compute.txt"

echo "== 2. disk read, 1 GiB"
dd if=/dev/urandom of="$WORK/read.bin" bs=4M count=256 status=none
state=$(drop)
t0=$(date +%s.%N); dd if="$WORK/read.bin" of=/dev/null bs=4M status=none; t1=$(date +%s.%N)
DISK=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", 1073741824/1e9/(b-a) }')
echo "disk read ($state page cache): $DISK GB/s"
rm -f "$WORK/read.bin"

echo "== 3. end to end on a BF16 release"
rm -rf "$WORK/bf16" "$WORK/model"
"$FMOE" synth --preset small --format hf-bf16 -o "$WORK/bf16" -q
IN=$(du -sb "$WORK/bf16" | cut -f1)
for step in extract pack; do
  state=$(drop)
  if [ $step = extract ]; then
    args=(extract "$WORK/bf16" -o "$WORK/model" -q)
  else
    args=(pack-experts "$WORK/bf16" --bits 4 -o "$WORK/model/packed_experts" -q)
  fi
  t0=$(date +%s.%N)
  /usr/bin/time -v "$FMOE" "${args[@]}" 2> "$WORK/$step.time"
  t1=$(date +%s.%N)
  RSS=$(awk -F: '/Maximum resident/ { printf "%.0f", $2/1024 }' "$WORK/$step.time")
  awk -v n="$step" -v a="$t0" -v b="$t1" -v in_="$IN" -v r="$RSS" -v st="$state" \
    'BEGIN { printf "%-8s %6.2f s, %.3f GB/s of the %.2f GB release (%s page cache), peak RSS %s MiB\n", n, b-a, in_/1e9/(b-a), in_/1e9, st, r }'
done
"$FMOE" verify "$WORK/model/packed_experts" -q && echo "verify: ok"
awk -v d="$DISK" '/ConvertBF16/ { for (i = 1; i <= NF; i++) if ($i == "MB/s") printf "%s: %.3f GB/s = %.2f x disk read\n", $1, $(i-1)/1000, $(i-1)/1000/d }' "$WORK/compute.txt"
