#!/usr/bin/env bash
# Regenerates testdata/flashmoe/ with flash-moe's own Python scripts (the byte-format goldens for
# fmoe extract, pack-experts and requant --method minmax). See docs/testing.md.
#
#   tools/reference/flashmoe_goldens.sh            # needs python3 with numpy and .flashmoe/ (or the
#                                                  # flash-moe git snapshot at $FLASHMOE_REPO)
#
# flash-moe's code is never committed: its scripts are copied into the git-ignored .flashmoe/ from
# the snapshot (HEAD 3601d418; generate_expert_index.py and export_vocab.py from side-branch
# commit 239ff32, which HEAD lacks). Inputs: the committed MLX checkpoints testdata/hf/tiny_4bit and
# testdata/hf/small12_gate8 (written by hf_goldens.py build) and tokenizer/qwen3/tokenizer.json.gz.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
FM=${FLASHMOE_REPO:-/work/.mirror/danveloper+flash-moe/repo}
PY=${PYTHON:-python3}
DEST=${DEST:-testdata/flashmoe}
HEAD_COMMIT=3601d418
SIDE_COMMIT=239ff32

mkdir -p .flashmoe
if [ -d "$FM" ]; then
  for f in metal_infer/extract_weights.py metal_infer/export_tokenizer.py repack_experts.py \
           metal_infer/repack_experts_2bit.py; do
    git -C "$FM" show "$HEAD_COMMIT:$f" > ".flashmoe/$(basename "$f")"
  done
  git -C "$FM" show "$SIDE_COMMIT:metal_infer/export_vocab.py" > .flashmoe/export_vocab.py
  git -C "$FM" show "$SIDE_COMMIT:generate_expert_index.py" > .flashmoe/generate_expert_index.py
fi
for f in extract_weights.py export_tokenizer.py repack_experts.py repack_experts_2bit.py \
         export_vocab.py generate_expert_index.py; do
  [ -f ".flashmoe/$f" ] || { echo "missing .flashmoe/$f (set FLASHMOE_REPO to a flash-moe clone)" >&2; exit 1; }
done
[ -f .flashmoe/tokenizer.json ] || gunzip -c tokenizer/qwen3/tokenizer.json.gz > .flashmoe/tokenizer.json

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
sums() { (cd "$1" && find . -type f | LC_ALL=C sort | sed 's|^\./||' | while read -r f; do
  printf '%s  %s  %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"; done); }

for fx in tiny_4bit small12_gate8; do
  echo "== $fx"
  mkdir -p "$WORK/$fx"
  cp testdata/hf/$fx/config.json testdata/hf/$fx/*.safetensors testdata/hf/$fx/model.safetensors.index.json "$WORK/$fx/"
  (cd "$WORK" &&
    $PY "$ROOT/.flashmoe/extract_weights.py" --model "$fx" --output "out_$fx" &&
    $PY "$ROOT/tools/reference/flashmoe_wrap.py" index --model "$fx" --output "out_$fx/expert_index.json" &&
    $PY "$ROOT/tools/reference/flashmoe_wrap.py" repack --index "out_$fx/expert_index.json" &&
    $PY "$ROOT/tools/reference/flashmoe_wrap.py" repack2 --model "$fx" --output "$fx/packed_experts_2bit") \
    > "$WORK/log_$fx.txt" 2>&1 || { cat "$WORK/log_$fx.txt"; exit 1; }
  # fmoe's own mirror of the formats (mlx_format.py) must give the same expert bytes.
  for bits in 4 2; do
    $PY tools/reference/hf_goldens.py packed "$fx" --bits $bits --out "$WORK/mirror${bits}_$fx" >/dev/null
    d=$([ $bits = 4 ] && echo packed_experts || echo packed_experts_2bit)
    for f in "$WORK/mirror${bits}_$fx"/layer_*.bin; do
      cmp "$f" "$WORK/$fx/$d/$(basename "$f")" || { echo "mlx_format mirror differs from flash-moe: $fx $d" >&2; exit 1; }
    done
  done
  out="$DEST/$fx"
  rm -rf "$out" && mkdir -p "$out"
  cp "$WORK/out_$fx/model_weights.bin" "$WORK/out_$fx/model_weights.json" "$WORK/out_$fx/expert_index.json" "$out/"
  cp -r "$WORK/$fx/packed_experts" "$WORK/$fx/packed_experts_2bit" "$out/"
  sums "$out" | grep -v SHA256SUMS > "$WORK/sums" && mv "$WORK/sums" "$out/SHA256SUMS"
done

echo "== qwen3 tokenizer"
mkdir -p "$WORK/tok"
$PY .flashmoe/export_tokenizer.py .flashmoe/tokenizer.json "$WORK/tok/tokenizer.bin" > /dev/null
$PY .flashmoe/export_vocab.py .flashmoe/tokenizer.json "$WORK/tok/vocab.bin" > /dev/null
out="$DEST/qwen3_tokenizer"
rm -rf "$out" && mkdir -p "$out"
sums "$WORK/tok" > "$out/SHA256SUMS"
# Whole files are 4.3 MB / 1.3 MB: commit their hashes and sizes, plus the first and last 64 KiB of
# each to locate a first difference (header, first vocab entries; last merges, added tokens).
for f in tokenizer.bin vocab.bin; do
  head -c 65536 "$WORK/tok/$f" > "$out/$f.head64k"
  tail -c 65536 "$WORK/tok/$f" > "$out/$f.tail64k"
done
cat "$out/SHA256SUMS"
echo "done: $DEST"
