#!/usr/bin/env python3
"""Goldens for converting original HF releases (BF16 and FP8) with fmoe (issue 6).

Runs on the GPU machine (torch + transformers; the forward runs on the CPU in float32):

    python3 tools/reference/hf_convert_goldens.py --out testdata/hfconv

For one small random Qwen3.5-MoE text model built with transformers' own Qwen3_5MoeForCausalLM it
writes two original-layout checkpoints and the perplexities HF computes:

  <out>/bf16/  model.safetensors (model.language_model.* names, fused experts.gate_up_proj /
               down_proj, zero-centred norms, conv1d [C,1,K], A_log F32) + config.json
  <out>/fp8/   the same model with every Linear weight except embed_tokens, lm_head, mlp.gate and
               mlp.shared_expert_gate stored F8_E4M3 with 128x128 weight_scale_inv blocks (F32),
               quantization_config {"quant_method": "fp8", "weight_block_size": [128, 128]}
  <out>/golden.json  reference ids and, per format, the mean next-token NLL of
               "orig": HF on the checkpoint's own values (bf16; fp8 x scale rounded to bf16) and
               "q4":   HF on the same weights quantized the MLX way (affine 4-bit, group 64;
                       8-bit mlp.gate / mlp.shared_expert_gate) and dequantized,
               so |q4 - orig| is the 4-bit quantization gap that fmoe's converted model must stay within.
"""

import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_goldens as hg  # noqa: E402
import mlx_format as mf  # noqa: E402

mf.DTYPES.setdefault("F8_E4M3", np.uint8)

SPEC = dict(hg.BASE, seed=11, vocab=256, hidden=128, layers=4, interval=2, experts=4, topk=2,
            moe_i=128, shared_i=128, lk=2, lv=4, dk=32, dv=32, eos=255)
IDS_LEN = 64
FP8_BLOCK = 128
ZERO_CENTRED = ("input_layernorm.weight", "post_attention_layernorm.weight", "q_norm.weight",
                "k_norm.weight")


def random_state(tc, rng):
    """float32 HF state dict with meaningful scales, perturbed norms, rounded to bf16 (A_log F32)."""
    import torch
    model, _ = hg.hf_model(tc)
    sd = {}
    for k, v in model.state_dict().items():
        shape = tuple(v.shape)
        if k.endswith("A_log"):
            sd[k] = np.log(rng.uniform(0.05, 1.0, shape)).astype(np.float32)
            continue
        if k.endswith("dt_bias"):
            a = rng.uniform(-1.0, 1.5, shape)
        elif k.endswith(ZERO_CENTRED) or k == "model.norm.weight":
            a = rng.standard_normal(shape) * 0.3
        elif k.endswith("linear_attn.norm.weight"):
            a = 1 + rng.standard_normal(shape) * 0.3
        elif k.endswith("conv1d.weight"):
            a = rng.standard_normal(shape) * 0.5
        elif k.endswith("embed_tokens.weight"):
            a = rng.standard_normal(shape)
        else:
            a = rng.standard_normal(shape) * shape[-1] ** -0.5
        sd[k] = mf.round_bf16(np.asarray(a, dtype=np.float32))
    return model, sd


def release_name(k):
    return k if k.startswith("lm_head") else "model.language_model." + k[len("model."):]


def fp8_weight(k, v):
    return v.ndim >= 2 and not any(s in k for s in ("embed_tokens", "lm_head", "mlp.gate.",
                                                     "shared_expert_gate", "conv1d"))


def fp8_quantize(v):
    """-> (codes uint8, scale_inv float32 [..., ceil(out/B), ceil(in/B)], dequantized bf16 values)."""
    import torch
    out, inn = v.shape[-2:]
    lead = v.shape[:-2]
    sr, sc = -(-out // FP8_BLOCK), -(-inn // FP8_BLOCK)
    m = v.reshape((-1, out, inn))
    codes = np.zeros(m.shape, np.uint8)
    deq = np.zeros(m.shape, np.float32)
    scales = np.zeros((m.shape[0], sr, sc), np.float32)
    for e in range(m.shape[0]):
        for i in range(sr):
            for j in range(sc):
                blk = m[e, i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK]
                s = np.float32(np.abs(blk).max() / 448.0) or np.float32(1)
                t = torch.from_numpy(np.ascontiguousarray(blk / s)).to(torch.float8_e4m3fn)
                codes[e, i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK] = \
                    t.view(torch.uint8).numpy()
                deq[e, i * FP8_BLOCK:(i + 1) * FP8_BLOCK, j * FP8_BLOCK:(j + 1) * FP8_BLOCK] = \
                    t.to(torch.float32).numpy() * s
                scales[e, i, j] = s
    return (codes.reshape(v.shape), scales.reshape(lead + (sr, sc)),
            mf.round_bf16(deq.reshape(v.shape)))


def write_release(d, tc, sd, fp8):
    """Writes the HF-layout checkpoint; returns the float32 values it holds (as fmoe reads them)."""
    os.makedirs(d, exist_ok=True)
    tensors, held = [], {}
    for k in sorted(sd):
        v, name = sd[k], release_name(k)
        if k.endswith("A_log"):
            tensors.append((name, "F32", v.shape, v))
            held[k] = v
        elif fp8 and fp8_weight(k, v):
            codes, scales, deq = fp8_quantize(v)
            tensors.append((name, "F8_E4M3", v.shape, codes))
            tensors.append((name + "_scale_inv", "F32", scales.shape, scales))
            held[k] = deq
        else:
            tensors.append((name, "BF16", v.shape, mf.bf16_rne(v)))
            held[k] = v
    mf.write_safetensors(os.path.join(d, "model.safetensors"), tensors, {"format": "pt"})
    cfg = {"model_type": "qwen3_5_moe", "architectures": ["Qwen3_5MoeForConditionalGeneration"],
           "tie_word_embeddings": False, "text_config": tc}
    if fp8:
        cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": [FP8_BLOCK, FP8_BLOCK]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return held


def q4(held):
    """The values fmoe's conversion produces: MLX affine quantization of every Linear/Embedding
    (4-bit; 8-bit router and shared-expert gate), zero-centred norms through bf16(w+1)-1."""
    out = {}
    for k, v in held.items():
        if k.endswith(ZERO_CENTRED) or k == "model.norm.weight":
            out[k] = mf.round_bf16(v + np.float32(1)) - np.float32(1)
        elif v.ndim >= 2 and not k.endswith("conv1d.weight") and v.shape[-1] % 64 == 0:
            bits = 8 if k.endswith(("mlp.gate.weight", "shared_expert_gate.weight")) else 4
            wq, s, b = mf.quantize(v, bits, 64)
            out[k] = mf.dequantize(wq, s, b, bits, 64).reshape(v.shape)
        else:
            out[k] = v
    return out


def mean_nll(model, sd, ids):
    import torch
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()},
                          strict=True)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    nll = -lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return float(nll.mean()), [float(x) for x in nll]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="testdata/hfconv")
    a = ap.parse_args()
    import torch
    import transformers
    torch.manual_seed(0)
    rng = np.random.default_rng(SPEC["seed"])
    tc = hg.text_config(SPEC)
    model, sd = random_state(tc, rng)
    ids = [int(i) for i in rng.integers(0, SPEC["vocab"], IDS_LEN)]
    golden = {"ids": ids, "formats": {},
              "command": "python3 tools/reference/hf_convert_goldens.py --out <out>",
              "torch": torch.__version__, "transformers": transformers.__version__,
              "numpy": np.__version__, "python": platform.python_version()}
    for name, fp8 in (("bf16", False), ("fp8", True)):
        held = write_release(os.path.join(a.out, name), tc, sd, fp8)
        orig, per_orig = mean_nll(model, held, ids)
        quant, per_q = mean_nll(model, q4(held), ids)
        golden["formats"][name] = {"nll_orig": orig, "nll_q4": quant, "nll_q4_per_position": per_q,
                                   "ppl_orig": float(np.exp(orig)), "ppl_q4": float(np.exp(quant))}
        print("%s: mean NLL orig %.5f  4-bit %.5f  gap %.5f" % (name, orig, quant, quant - orig))
    with open(os.path.join(a.out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
