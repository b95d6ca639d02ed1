#!/usr/bin/env python3
"""Writes tiny_tokenizer.json and tiny_tokenizer_strmerges.json (run in this directory):

    python3 make_tiny.py
"""
import json

bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + n)
        n += 1
enc = {b: chr(c) for b, c in zip(bs, cs)}
vocab = {enc[b]: b for b in range(256)}
merges = [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "in"], ["Ã", "©"], ["Ġ", "Ġ"], ["ä", "½"], ["ä½", "ł"]]
nid = 256
for a, b in merges:
    vocab[a + b] = nid
    nid += 1


def added(i, content, special):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": special}


bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
regex = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
t = {"version": "1.0", "truncation": None, "padding": None,
     "added_tokens": [added(300, "<|endoftext|>", True), added(302, "<think>", False),
                      added(301, "<|im_end|>", True), added(303, "Ġé☃ x", False)],
     "normalizer": {"type": "NFC"},
     "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
         {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}, bl]},
     "post_processor": bl, "decoder": bl,
     "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
               "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
               "vocab": vocab, "merges": merges}}
json.dump(t, open("tiny_tokenizer.json", "w"), ensure_ascii=False, indent=1)
t["model"]["merges"] = [a + " " + b for a, b in merges]
json.dump(t, open("tiny_tokenizer_strmerges.json", "w"), ensure_ascii=False, indent=1)
