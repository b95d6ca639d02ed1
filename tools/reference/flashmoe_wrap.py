#!/usr/bin/env python3
"""Runs flash-moe's expert scripts on small checkpoints.

flash-moe's generate_expert_index.py, repack_experts.py and metal_infer/repack_experts_2bit.py
hard-code the 397B dimensions as module constants. This wrapper imports each script (copied, not
committed, into .flashmoe/ by flashmoe_goldens.sh) as a module, replaces those constants with the
ones of the checkpoint at hand (read from its config.json: hidden size, moe intermediate size,
number of layers and experts, 4-bit group 64), and calls the script's own main(). Nothing else of
the scripts is changed, except repack_experts.verify_layer, whose spot check reads experts
0, 1, 255 and 511 (past the end of a small model's tensors); it is replaced by a check of every
expert against the source bytes.

  flashmoe_wrap.py index   --model DIR --output expert_index.json   (cwd decides model_path)
  flashmoe_wrap.py repack  --index expert_index.json                (writes MODEL/packed_experts)
  flashmoe_wrap.py repack2 --model DIR --output OUTDIR              (2-bit, reads MODEL/packed_experts)
"""

import argparse
import importlib
import json
import os
import sys

GROUP = 64


def dims(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    tc = cfg.get("text_config", cfg)
    return (tc["hidden_size"], tc["moe_intermediate_size"], tc["num_hidden_layers"], tc["num_experts"])


def components(hidden, inter, bits):
    """flash-moe's 9-component expert layout for these dims (same order as its COMPONENTS)."""
    comps, off = [], 0
    for proj, rows, cols in (("gate_proj", inter, hidden), ("up_proj", inter, hidden),
                             ("down_proj", hidden, inter)):
        for part, dtype, shape, size in (
                ("weight", "U32", [rows, cols * bits // 32], rows * cols * bits // 8),
                ("scales", "BF16", [rows, cols // GROUP], rows * (cols // GROUP) * 2),
                ("biases", "BF16", [rows, cols // GROUP], rows * (cols // GROUP) * 2)):
            comps.append({"name": "%s.%s" % (proj, part), "offset": off, "size": size,
                          "dtype": dtype, "shape": shape})
            off += size
    return comps, off


def load(name):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "..", ".flashmoe"))
    return importlib.import_module(name)


def run_main(mod, argv):
    sys.argv = argv
    mod.main()


def cmd_index(a):
    hidden, inter, layers, experts = dims(a.model)
    m = load("generate_expert_index")
    comps, _ = components(hidden, inter, 4)
    m.COMPONENT_SIZES = {c["name"]: c["size"] for c in comps}
    m.NUM_EXPERTS, m.NUM_LAYERS = experts, layers
    run_main(m, ["generate_expert_index.py", "--model", a.model, "--output", a.output])


def cmd_repack(a):
    with open(a.index) as f:
        model_path = json.load(f)["model_path"]
    hidden, inter, layers, experts = dims(model_path)
    m = load("repack_experts")
    comps, size = components(hidden, inter, 4)
    m.COMPONENTS, m.EXPERT_SIZE, m.NUM_EXPERTS, m.NUM_LAYERS = comps, size, experts, layers
    m.LAYER_SIZE = experts * size

    def verify_all(layer_idx, expert_reads, model_path, fds, output_dir):
        info = expert_reads[str(layer_idx)]
        with open(os.path.join(output_dir, "layer_%02d.bin" % layer_idx), "rb") as f:
            packed = f.read()
        bad = 0
        for e in range(experts):
            for c in comps:
                i = info[c["name"]]
                src = os.pread(fds[i["file"]], c["size"], i["abs_offset"] + e * i["expert_stride"])
                dst = packed[e * size + c["offset"]: e * size + c["offset"] + c["size"]]
                bad += src != dst
        print("  Layer %d: full verification %s" % (layer_idx, "PASSED" if bad == 0 else "FAILED"))
        return bad == 0

    m.verify_layer = verify_all
    run_main(m, ["repack_experts.py", "--index", a.index])


def cmd_repack2(a):
    hidden, inter, layers, experts = dims(a.model)
    m = load("repack_experts_2bit")
    c4, size4 = components(hidden, inter, 4)
    c2, size2 = components(hidden, inter, 2)
    off4 = {c["name"]: c["offset"] for c in c4}
    off2 = {c["name"]: c["offset"] for c in c2}
    m.EXPERT_SIZE_4BIT, m.EXPERT_SIZE_2BIT, m.NUM_EXPERTS = size4, size2, experts
    m.PROJS_4BIT = [
        (short, rows, cols, off4[p + ".weight"], off4[p + ".scales"], off4[p + ".biases"])
        for short, p, rows, cols in (("gate", "gate_proj", inter, hidden), ("up", "up_proj", inter, hidden),
                                     ("down", "down_proj", hidden, inter))]
    m.PROJS_2BIT_OFFSETS = {
        short: (off2[p + ".weight"], off2[p + ".scales"], off2[p + ".biases"])
        for short, p in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj"))}
    run_main(m, ["repack_experts_2bit.py", "--model", a.model, "--output", a.output, "--verify"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("index")
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True)
    p = sub.add_parser("repack")
    p.add_argument("--index", required=True)
    p = sub.add_parser("repack2")
    p.add_argument("--model", required=True)
    p.add_argument("--output", required=True)
    a = ap.parse_args()
    {"index": cmd_index, "repack": cmd_repack, "repack2": cmd_repack2}[a.cmd](a)


if __name__ == "__main__":
    main()
