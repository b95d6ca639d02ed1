#!/usr/bin/env python3
"""HF-transformers goldens for fmoe's runtime: small random Qwen3.5-MoE text models.

Two steps (see docs/testing.md, section "HF transformers goldens"):

  build   (numpy only, runs anywhere)  writes the MLX-format checkpoints under testdata/hf/<fixture>/:
          random float32 weights -> rounded to bf16 (the "release") -> MLX conversion (norm +1 shift,
          conv1d [C,K,1], experts split from a fused gate_up into switch_mlp, A_log F32 or BF16) ->
          affine quantization (4-bit g64; 8-bit router/shared-expert gate where the fixture says so).
  golden  (torch + transformers, on the GPU machine; computes on the CPU in float32) reads those
          committed checkpoints, dequantizes every quantized tensor (q*scale+bias, bf16 widened exactly),
          undoes the +1 norm shift, loads the result into transformers' own Qwen3_5MoeForCausalLM with
          load_state_dict(strict=True), and records prefill logits, greedy decode logits with the
          KV/recurrent cache and per-layer hidden states into golden.json. It also runs
          qwen35_numpy.forward on the same weights and refuses to write a golden whose logits disagree.

Fixture tiny_2bit has no checkpoint of its own: it is tiny_4bit with its routed experts requantized
to 2-bit the flash-moe way (repack_experts_2bit.py's minmax rule, see mlx_format.requant_minmax_2bit);
the golden runs HF on those 2-bit-dequantized experts.
"""

import argparse
import json
import os
import platform
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlx_format as mf  # noqa: E402
import qwen35_numpy as ref  # noqa: E402

BASE = dict(seed=1, vocab=512, hidden=128, layers=4, interval=2, write_layer_types=True, heads=4,
            kv=2, head_dim=32, prf=0.25, theta=1e7, experts=8, topk=3, moe_i=64, shared_i=128,
            lk=2, lv=4, dk=32, dv=32, conv=4, gate_bits=4, alog="F32", shards=2, index=True,
            quant_mode=False, vision=False, eos=511)

FIXTURES = {
    # (a) 4-bit everything, sharded (2 shards + index), layer_types and full_attention_interval
    # both present, rope_theta 1e7, A_log F32 (the 397B's conventions).
    "tiny_4bit": dict(BASE),
    # (b) 8-bit mlp.gate and mlp.shared_expert_gate recorded as config overrides, single
    # model.safetensors without an index, only full_attention_interval (no layer_types),
    # rope_theta 1e4, A_log BF16 (35B-A3B-style), top-2, quantization "mode": "affine".
    "tiny_gate8": dict(BASE, seed=2, theta=1e4, topk=2, gate_bits=8, alog="BF16", shards=1,
                       index=False, write_layer_types=False, quant_mode=True, eos=2),
    # A 12-layer model (layer names sort as 0,1,10,11,2,...), interval 4, hidden 64, 8-bit gates,
    # 3 shards + index and one vision_tower tensor that converters must skip.
    "small12_gate8": dict(BASE, seed=3, vocab=256, hidden=64, layers=12, interval=4, heads=2,
                          kv=1, experts=4, topk=2, moe_i=64, shared_i=64, lk=1, lv=2,
                          gate_bits=8, shards=3, vision=True, eos=255),
}
DERIVED = {"tiny_2bit": "tiny_4bit"}  # experts requantized to 2-bit, golden only

PROMPT_LEN = 12
DECODE_STEPS = 4
PREFIX = "language_model."


# ---------------------------------------------------------------- build (numpy)

def text_config(s):
    tc = {
        "model_type": "qwen3_5_moe_text",
        "hidden_size": s["hidden"], "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"], "num_key_value_heads": s["kv"], "head_dim": s["head_dim"],
        "vocab_size": s["vocab"], "rms_norm_eps": 1e-6, "hidden_act": "silu",
        "num_experts": s["experts"], "num_experts_per_tok": s["topk"],
        "moe_intermediate_size": s["moe_i"], "shared_expert_intermediate_size": s["shared_i"],
        "full_attention_interval": s["interval"],
        "linear_num_key_heads": s["lk"], "linear_num_value_heads": s["lv"],
        "linear_key_head_dim": s["dk"], "linear_value_head_dim": s["dv"],
        "linear_conv_kernel_dim": s["conv"],
        "rope_parameters": {"rope_type": "default", "rope_theta": s["theta"],
                            "partial_rotary_factor": s["prf"],
                            "mrope_section": mrope_section(s), "mrope_interleaved": True},
        "partial_rotary_factor": s["prf"], "max_position_embeddings": 4096,
        "attention_bias": False, "tie_word_embeddings": False, "eos_token_id": s["eos"],
        "router_aux_loss_coef": 0.001,
    }
    if s["write_layer_types"]:
        tc["layer_types"] = layer_types(s)
    return tc


def mrope_section(s):
    half = int(s["head_dim"] * s["prf"]) // 2
    a = (half + 2) // 3
    return [a, a, half - 2 * a] if half - 2 * a > 0 else [half - 1, 1, 0]


def layer_types(s):
    return ["full_attention" if (i + 1) % s["interval"] == 0 else "linear_attention"
            for i in range(s["layers"])]


def build_tensors(s):
    """The MLX tensors in module order: list of (name, dtype, shape, array)."""
    rng = np.random.default_rng(s["seed"])
    out = []
    bf = mf.round_bf16

    def nrm(shape, std):
        return bf((rng.standard_normal(shape) * std).astype(np.float32))

    def quant(name, w, bits=4):
        wq, sc, bi = mf.quantize(w, bits, 64)
        out.append((PREFIX + name + ".weight", "U32", wq.shape, wq))
        out.append((PREFIX + name + ".scales", "BF16", sc.shape, sc))
        out.append((PREFIX + name + ".biases", "BF16", bi.shape, bi))

    def bf16(name, w):
        out.append((PREFIX + name, "BF16", w.shape, mf.bf16_rne(w)))

    def shifted_norm(name, n):  # HF zero-centred weight (bf16) -> MLX w+1 (bf16)
        bf16(name, bf(nrm(n, 0.3) + np.float32(1)))

    H, V, E, I, Is = s["hidden"], s["vocab"], s["experts"], s["moe_i"], s["shared_i"]
    nh, nkv, hd = s["heads"], s["kv"], s["head_dim"]
    kd, vd = s["lk"] * s["dk"], s["lv"] * s["dv"]
    conv_dim = 2 * kd + vd
    quant("model.embed_tokens", nrm((V, H), 1.0))
    for L, kind in enumerate(layer_types(s)):
        p = "model.layers.%d." % L
        shifted_norm(p + "input_layernorm.weight", H)
        if kind == "full_attention":
            a = p + "self_attn."
            quant(a + "q_proj", nrm((nh * hd * 2, H), H ** -0.5))
            quant(a + "k_proj", nrm((nkv * hd, H), H ** -0.5))
            quant(a + "v_proj", nrm((nkv * hd, H), H ** -0.5))
            quant(a + "o_proj", nrm((H, nh * hd), (nh * hd) ** -0.5))
            shifted_norm(a + "q_norm.weight", hd)
            shifted_norm(a + "k_norm.weight", hd)
        else:
            a = p + "linear_attn."
            quant(a + "in_proj_qkv", nrm((conv_dim, H), H ** -0.5))
            quant(a + "in_proj_z", nrm((vd, H), H ** -0.5))
            quant(a + "in_proj_b", nrm((s["lv"], H), H ** -0.5))
            quant(a + "in_proj_a", nrm((s["lv"], H), H ** -0.5))
            bf16(a + "conv1d.weight", nrm((conv_dim, s["conv"]), 0.5).reshape(conv_dim, s["conv"], 1))
            bf16(a + "dt_bias", bf(rng.uniform(-1.0, 1.5, s["lv"]).astype(np.float32)))
            alog = np.log(rng.uniform(0.05, 1.0, s["lv"])).astype(np.float32)
            if s["alog"] == "F32":
                out.append((PREFIX + a + "A_log", "F32", alog.shape, alog))
            else:
                bf16(a + "A_log", bf(alog))
            bf16(a + "norm.weight", bf(np.float32(1) + nrm(s["dv"], 0.3)))
            quant(a + "out_proj", nrm((H, vd), vd ** -0.5))
        shifted_norm(p + "post_attention_layernorm.weight", H)
        m = p + "mlp."
        quant(m + "gate", nrm((E, H), 1.5 * H ** -0.5), s["gate_bits"])
        gate_up = nrm((E, 2 * I, H), H ** -0.5)  # HF's fused experts.gate_up_proj
        quant(m + "switch_mlp.gate_proj", gate_up[:, :I, :])
        quant(m + "switch_mlp.up_proj", gate_up[:, I:, :])
        quant(m + "switch_mlp.down_proj", nrm((E, H, I), I ** -0.5))
        quant(m + "shared_expert.gate_proj", nrm((Is, H), H ** -0.5))
        quant(m + "shared_expert.up_proj", nrm((Is, H), H ** -0.5))
        quant(m + "shared_expert.down_proj", nrm((H, Is), Is ** -0.5))
        quant(m + "shared_expert_gate", nrm((1, H), H ** -0.5), s["gate_bits"])
    shifted_norm("model.norm.weight", H)
    quant("lm_head", nrm((V, H), H ** -0.5))
    if s["vision"]:
        w = nrm((8, 16), 0.1)
        out.append(("vision_tower.patch_embed.proj.weight", "BF16", w.shape, mf.bf16_rne(w)))
    return out


def quant_block(s):
    q = {"group_size": 64, "bits": 4}
    if s["quant_mode"]:
        q["mode"] = "affine"
    if s["gate_bits"] != 4:
        for L in range(s["layers"]):
            for mod in ("mlp.gate", "mlp.shared_expert_gate"):
                q["%smodel.layers.%d.%s" % (PREFIX, L, mod)] = {"group_size": 64, "bits": s["gate_bits"]}
    return q


def build(name, root):
    s = FIXTURES[name]
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        if fn.endswith(".safetensors") or fn in ("model.safetensors.index.json", "config.json"):
            os.remove(os.path.join(d, fn))
    tensors = build_tensors(s)
    sizes = [int(np.prod(t[2])) * np.dtype(mf.DTYPES[t[1]]).itemsize for t in tensors]
    total = sum(sizes)
    n = s["shards"]
    shards, acc, cur = [[] for _ in range(n)], 0, 0
    for t, sz in zip(tensors, sizes):
        if cur < n - 1 and acc >= total * (cur + 1) / n:
            cur += 1
        shards[cur].append(t)
        acc += sz
    weight_map = {}
    for i, sh in enumerate(shards):
        fn = "model.safetensors" if n == 1 else "model-%05d-of-%05d.safetensors" % (i + 1, n)
        mf.write_safetensors(os.path.join(d, fn), sh, {"format": "mlx"})
        for t in sh:
            weight_map[t[0]] = fn
    if s["index"]:
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total},
                       "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
            f.write("\n")
    qb = quant_block(s)
    cfg = {"architectures": ["Qwen3_5MoeForConditionalGeneration"], "model_type": "qwen3_5_moe",
           "tie_word_embeddings": False, "text_config": text_config(s),
           "quantization": qb, "quantization_config": qb}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    print("built %s: %d tensors, %d bytes of tensor data, %d shard(s)" % (name, len(tensors), total, n))


# ---------------------------------------------------------------- reading a fixture back

def load_fixture(root, name):
    src = DERIVED.get(name, name)
    d = os.path.join(root, src)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    arrays, dtypes = mf.read_checkpoint(d)
    return src, cfg, arrays, dtypes


def module_bits(qc, module):
    o = qc.get(module)
    return o.get("bits", qc["bits"]) if isinstance(o, dict) else qc["bits"]


def effective_weights(cfg, arrays, dtypes, experts_2bit=False):
    """float32 weights in the MLX convention, keyed without the language_model. prefix."""
    qc = cfg["quantization"]
    group = qc["group_size"]
    W = {}
    for name, arr in arrays.items():
        if not name.startswith(PREFIX) or name.endswith((".scales", ".biases")):
            continue
        short = name[len(PREFIX):]
        mod = name[:-len(".weight")] if name.endswith(".weight") else None
        if mod is not None and mod + ".scales" in arrays:
            bits = module_bits(qc, mod)
            sc, bi = arrays[mod + ".scales"], arrays[mod + ".biases"]
            cols = sc.shape[-1] * group
            assert arr.shape[-1] * 32 == cols * bits, (name, arr.shape, sc.shape, bits)
            W[short] = mf.dequantize(arr, sc, bi, bits, group)
        elif dtypes[name] == "BF16":
            W[short] = mf.bf16_to_f32(arr)
        elif dtypes[name] == "F32":
            W[short] = np.array(arr, dtype=np.float32)
        else:
            raise ValueError("unexpected dtype %s for %s" % (dtypes[name], name))
    if experts_2bit:
        tc = cfg["text_config"]
        for L in range(tc["num_hidden_layers"]):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                mod = PREFIX + "model.layers.%d.mlp.switch_mlp.%s" % (L, proj)
                wq, s4, b4 = arrays[mod + ".weight"], arrays[mod + ".scales"], arrays[mod + ".biases"]
                deq = []
                for e in range(wq.shape[0]):
                    w2, s2, b2 = mf.requant_minmax_2bit(wq[e], s4[e], b4[e], group)
                    deq.append(mf.dequantize(w2, s2, b2, 2, group))
                W[mod[len(PREFIX):] + ".weight"] = np.stack(deq)
    return W


def flashmoe_expert_layer(arrays, layer, bits, group=64):
    """One layer of experts in flash-moe's packed layout (layer_XX.bin bytes)."""
    blobs = []
    E = arrays[PREFIX + "model.layers.%d.mlp.switch_mlp.gate_proj.weight" % layer].shape[0]
    for e in range(E):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            mod = PREFIX + "model.layers.%d.mlp.switch_mlp.%s" % (layer, proj)
            w, s, b = arrays[mod + ".weight"][e], arrays[mod + ".scales"][e], arrays[mod + ".biases"][e]
            if bits == 2:
                w, s, b = mf.requant_minmax_2bit(w, s, b, group)
            blobs += [np.ascontiguousarray(w).tobytes(), np.ascontiguousarray(s).tobytes(),
                      np.ascontiguousarray(b).tobytes()]
    return b"".join(blobs)


NORM_SUFFIXES = ("input_layernorm.weight", "post_attention_layernorm.weight",
                 "q_norm.weight", "k_norm.weight")


def hf_weights(tc, W):
    """HF Qwen3_5MoeForCausalLM state dict (numpy float32) from MLX-convention weights."""
    sd = {}
    for k, v in W.items():
        if k.endswith(NORM_SUFFIXES) or k == "model.norm.weight":
            hf = (v - np.float32(1)).astype(np.float32)
            assert np.array_equal(hf + np.float32(1), v), k  # the shift is exact in float32
            sd[k] = hf
        elif k.endswith("conv1d.weight"):
            sd[k] = v.reshape(v.shape[0], 1, v.shape[1])  # [C,K,1] -> [C,1,K], same memory order
        elif ".switch_mlp." in k:
            continue
        else:
            sd[k] = v
    for L in range(tc["num_hidden_layers"]):
        p = "model.layers.%d.mlp." % L
        g, u = W[p + "switch_mlp.gate_proj.weight"], W[p + "switch_mlp.up_proj.weight"]
        sd[p + "experts.gate_up_proj"] = np.concatenate([g, u], axis=1)
        sd[p + "experts.down_proj"] = W[p + "switch_mlp.down_proj.weight"]
    return sd


def greedy_numpy(tc, W, prompt, steps):
    ids, margins = list(prompt), []
    for _ in range(steps + 1):
        logits, _ = ref.forward(tc, W, ids)
        margins.append(margin(logits[-1]))
        ids.append(int(logits[-1].argmax()))
    return ids[len(prompt):], margins


def choose_prompt(root, name, tries=24):
    """Pick a prompt whose greedy continuation has clear top-1 margins in the numpy reference (so a
    token-equality test is meaningful) and never emits the eos id; written to <name>/prompt.json."""
    src, cfg, arrays, dtypes = load_fixture(root, name)
    tc = cfg["text_config"]
    W = effective_weights(cfg, arrays, dtypes, experts_2bit=name in DERIVED)
    rng = np.random.default_rng(1000 + sum(map(ord, name)))
    best = None
    for _ in range(tries):
        ids = [int(i) for i in rng.integers(0, tc["vocab_size"], PROMPT_LEN)]
        ids[7] = ids[3]  # a repeated token: identical keys at two positions
        greedy, margins = greedy_numpy(tc, W, ids, DECODE_STEPS)
        if tc["eos_token_id"] in greedy:
            continue
        if best is None or min(margins) > best[2]:
            best = (ids, greedy, min(margins))
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "prompt.json"), "w") as f:
        json.dump({"prompt_ids": best[0], "numpy_greedy_ids": best[1],
                   "numpy_min_margin": round(best[2], 4)}, f)
        f.write("\n")
    print("%s: prompt %s greedy %s min margin %.3f" % (name, best[0], best[1], best[2]))


def prompt_ids(root, name):
    with open(os.path.join(root, name, "prompt.json")) as f:
        return json.load(f)["prompt_ids"]


# ---------------------------------------------------------------- golden (torch + transformers)

HF_TEXT_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "hidden_act", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "attention_bias",
    "head_dim", "linear_conv_kernel_dim", "linear_key_head_dim", "linear_value_head_dim",
    "linear_num_key_heads", "linear_num_value_heads", "moe_intermediate_size",
    "shared_expert_intermediate_size", "num_experts_per_tok", "num_experts", "router_aux_loss_coef",
    "layer_types", "eos_token_id")


def hf_model(tc):
    import torch
    try:
        from transformers import Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig
    except ImportError:
        from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import Qwen3_5MoeForCausalLM
        from transformers.models.qwen3_5_moe.configuration_qwen3_5_moe import Qwen3_5MoeTextConfig
    kw = {k: tc[k] for k in HF_TEXT_FIELDS if k in tc}
    kw["rope_parameters"] = dict(tc["rope_parameters"])
    kw["partial_rotary_factor"] = tc["partial_rotary_factor"]
    if "layer_types" not in kw:
        kw["full_attention_interval"] = tc["full_attention_interval"]
    cfg = Qwen3_5MoeTextConfig(**kw)
    notes = {}
    try:
        model = Qwen3_5MoeForCausalLM._from_config(cfg, attn_implementation="eager",
                                                   experts_implementation="eager", dtype=torch.float32)
    except Exception as e:  # older/newer signatures: fall back to plain construction
        notes["from_config_error"] = repr(e)[:300]
        try:
            cfg._attn_implementation = "eager"
        except Exception as e2:
            notes["set_attn_error"] = repr(e2)[:300]
        model = Qwen3_5MoeForCausalLM(cfg)
    if getattr(model.config, "_experts_implementation", "eager") not in (None, "eager"):
        try:
            if hasattr(model, "set_experts_implementation"):
                model.set_experts_implementation("eager")
            else:
                model.config._experts_implementation = "eager"
        except Exception as e:
            notes["set_experts_error"] = repr(e)[:300]
    try:
        notes["rope_parameters"] = {k: v for k, v in dict(model.config.rope_parameters).items()}
    except Exception:
        pass
    model = model.to(torch.float32).eval()
    for attr in ("_attn_implementation", "_experts_implementation"):
        notes[attr.lstrip("_")] = str(getattr(model.config, attr, None))
    return model, notes


def run_hf(model, prompt, steps):
    import torch
    hs, hooks = {}, []

    def grab(key):
        def fn(_mod, _inp, out):
            t = out[0] if isinstance(out, (tuple, list)) else out
            hs.setdefault(key, t.detach()[0].float().cpu().numpy().copy())
        return fn

    m = model.model
    hooks.append(m.embed_tokens.register_forward_hook(grab("embed")))
    for i, layer in enumerate(m.layers):
        hooks.append(layer.register_forward_hook(grab("layer%d" % i)))
    hooks.append(m.norm.register_forward_hook(grab("final_norm")))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        for h in hooks:
            h.remove()
        prefill = out.logits[0].float().numpy()
        cache = out.past_key_values
        nxt = int(prefill[-1].argmax())
        dec_ids, dec_logits = [], []
        for _ in range(steps):
            dec_ids.append(nxt)
            o = model(input_ids=torch.tensor([[nxt]]), past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            lg = o.logits[0, -1].float().numpy()
            dec_logits.append(lg)
            nxt = int(lg.argmax())
        full = model(input_ids=torch.tensor([prompt + dec_ids]), use_cache=False).logits[0].float().numpy()
    layers = [hs["layer%d" % i] for i in range(len(m.layers))]
    return prefill, dec_ids, np.stack(dec_logits), nxt, full, {
        "embed": hs["embed"], "layers": layers, "final_norm": hs["final_norm"]}


def f32(a):
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 0:
        return float(np.format_float_positional(a, unique=True))
    return [f32(x) for x in a]


def rel_err(x, ref_):
    """max over positions of max|x-ref| / max|ref| (per position, i.e. per row)."""
    x, ref_ = np.atleast_2d(x), np.atleast_2d(ref_)
    return float(np.max(np.max(np.abs(x - ref_), axis=-1) / np.max(np.abs(ref_), axis=-1)))


def margin(lg):
    s = np.sort(np.asarray(lg, dtype=np.float64))[::-1]
    return float(s[0] - s[1])


FEEDING = (
    "Model: the MLX checkpoint in `checkpoint` (config.json + safetensors), read the way fmoe reads it "
    "(fmoe extract + pack-experts; for 2-bit experts also fmoe requant --method minmax, whose bytes equal "
    "testdata/flashmoe/<fixture>/packed_experts_2bit). Routing uses num_experts_per_tok from config.json. "
    "Prefill: fresh state, feed prompt_ids at positions 0..T-1 (one-shot, or token by token: both must "
    "match); prefill_logits[t] = logits after token t. Decode: after that prefill, feed decode_ids[i] alone "
    "at position T+i with the KV/conv/recurrent state; decode_logits[i] = its logits. decode_ids[0] = "
    "argmax(prefill_logits[T-1]), decode_ids[i] = argmax(decode_logits[i-1]); greedy_ids = decode_ids + "
    "[argmax(decode_logits[k-1])] is what greedy generation of k+1 tokens yields (greedy_margins[i] = top1 - "
    "top2 logit of that step; skip the token check where the margin is below your error). hidden_states "
    "(prompt positions only): embed = embedding rows, layers[i] = residual stream after decoder layer i "
    "(before the final norm), final_norm = output of model.norm (the lm_head input). No BOS, ids as given.")


def golden(root, out_root, name, command):
    import torch
    import transformers
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(16, os.cpu_count() or 1)))
    src, cfg, arrays, dtypes = load_fixture(root, name)
    tc = cfg["text_config"]
    two_bit = name in DERIVED
    W = effective_weights(cfg, arrays, dtypes, experts_2bit=two_bit)
    model, notes = hf_model(tc)
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in hf_weights(tc, W).items()}
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    extra = sorted(set(sd) - set(want))
    bad = [k for k in sd if k in want and tuple(want[k].shape) != tuple(sd[k].shape)]
    if missing or extra or bad:
        print("state dict mismatch for %s\n missing %s\n unexpected %s\n shapes %s" % (
            name, missing, extra, [(k, tuple(want[k].shape), tuple(sd[k].shape)) for k in bad]))
        print("HF keys:", sorted((k, tuple(v.shape)) for k, v in want.items())[:80])
        raise SystemExit(2)
    model.load_state_dict(sd, strict=True)
    lt = list(model.config.layer_types)
    want_lt = ref.Config(tc).layer_types
    assert lt == want_lt, (lt, want_lt)
    rd = int(tc["head_dim"] * tc["partial_rotary_factor"])
    inv = model.model.rotary_emb.inv_freq.float().numpy()
    assert inv.size == rd // 2, (inv.size, rd)
    theta = tc["rope_parameters"]["rope_theta"]
    assert np.allclose(inv, theta ** (-np.arange(0, rd, 2) / rd), rtol=1e-5), inv

    prompt = prompt_ids(root, name)
    prefill, dec_ids, dec_logits, nxt, full, hs = run_hf(model, prompt, DECODE_STEPS)
    T = len(prompt)
    np_logits, np_hs = ref.forward(tc, W, prompt + dec_ids)
    checks = {
        "hf_cached_decode_vs_oneshot_rel": rel_err(dec_logits, full[T:]),
        "hf_oneshot_vs_prefill_rel": rel_err(full[:T], prefill),
        "numpy_ref_vs_hf_prefill_rel": rel_err(np_logits[:T], prefill),
        "numpy_ref_vs_hf_decode_rel": rel_err(np_logits[T:], dec_logits),
        "numpy_ref_vs_hf_hidden_rel": {
            "embed": rel_err(np_hs["embed"][:T], hs["embed"]),
            "layers": [rel_err(a[:T], b) for a, b in zip(np_hs["layers"], hs["layers"])],
            "final_norm": rel_err(np_hs["final_norm"][:T], hs["final_norm"]),
        },
    }
    print(name, json.dumps(checks))
    ok = max(checks["numpy_ref_vs_hf_prefill_rel"], checks["numpy_ref_vs_hf_decode_rel"],
             checks["hf_cached_decode_vs_oneshot_rel"]) < 1e-4
    greedy = dec_ids + [nxt]
    margins = [margin(prefill[-1])] + [margin(x) for x in dec_logits]
    experts = {"bits": 4, "group_size": 64, "source": "checkpoint switch_mlp tensors"}
    if two_bit:
        experts = {"bits": 2, "group_size": 64,
                   "source": "checkpoint's 4-bit switch_mlp experts requantized per flash-moe "
                             "repack_experts_2bit.py (minmax, round-half-even codes, bf16-truncated "
                             "scales/biases); HF ran the 2-bit dequantized values",
                   "packed_experts_2bit": "testdata/flashmoe/%s/packed_experts_2bit" % src}
    g = {
        "schema": "fmoe-hf-golden/1",
        "fixture": name,
        "checkpoint": "." if src == name else "../" + src,
        "experts": experts,
        "num_experts_per_tok": tc["num_experts_per_tok"],
        "dtype": "float32",
        "feeding": FEEDING,
        "tolerance": {"metric": "per position: max_v |x_v - golden_v| / max_v |golden_v|",
                      "logits": 1e-3, "hidden_states": 1e-3},
        "prompt_ids": prompt,
        "decode_ids": dec_ids,
        "greedy_ids": greedy,
        "greedy_margins": margins,
        "checks": checks,
        "checks_passed": bool(ok),
        "hf": notes,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "command": command,
        "prefill_logits": f32(prefill),
        "decode_logits": f32(dec_logits),
        "hidden_states": {"embed": f32(hs["embed"]), "layers": [f32(x) for x in hs["layers"]],
                          "final_norm": f32(hs["final_norm"])},
    }
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(g, f, separators=(",", ":"))
        f.write("\n")
    print("wrote %s/golden.json (checks %s, greedy %s, margins %s)" % (
        d, "ok" if ok else "FAILED", greedy, ["%.3g" % m for m in margins]))
    return ok


# ---------------------------------------------------------------- numpy-only helpers

def selfcheck(root, name):
    """Sanity of a fixture without torch: numpy forward, logit spread, routing spread."""
    src, cfg, arrays, dtypes = load_fixture(root, name)
    tc = cfg["text_config"]
    W = effective_weights(cfg, arrays, dtypes, experts_2bit=name in DERIVED)
    prompt = prompt_ids(root, name)
    logits, hs = ref.forward(tc, W, prompt)
    norms = [float(np.sqrt(np.mean(h * h))) for h in [hs["embed"]] + hs["layers"]]
    print("%s: logits std %.3f, last-position margin %.4f, argmax %d, residual rms per layer %s" % (
        name, logits.std(), margin(logits[-1]), int(logits[-1].argmax()),
        ["%.2f" % n for n in norms]))


def write_packed(root, name, bits, out):
    """flash-moe-layout layer_XX.bin files of a fixture's experts (mlx_format's own mirror)."""
    _, cfg, arrays, _ = load_fixture(root, name)
    os.makedirs(out, exist_ok=True)
    for L in range(cfg["text_config"]["num_hidden_layers"]):
        with open(os.path.join(out, "layer_%02d.bin" % L), "wb") as f:
            f.write(flashmoe_expert_layer(arrays, L, bits))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["build", "golden", "selfcheck", "packed"])
    ap.add_argument("fixtures", nargs="*", help="default: all")
    ap.add_argument("--root", default="testdata/hf", help="fixture checkpoints (default testdata/hf)")
    ap.add_argument("--out", default=None, help="golden: where <fixture>/golden.json go (default --root); "
                    "packed: output directory")
    ap.add_argument("--bits", type=int, default=4, help="packed: 4 or 2")
    a = ap.parse_args()
    names = a.fixtures or (list(FIXTURES) + (list(DERIVED) if a.cmd != "packed" else []))
    if a.cmd == "build":
        for n in names:
            if n in FIXTURES:
                build(n, a.root)
        for n in names:
            choose_prompt(a.root, n)
    elif a.cmd == "selfcheck":
        for n in names:
            selfcheck(a.root, n)
    elif a.cmd == "packed":
        for n in names:
            write_packed(a.root, n, a.bits, a.out)
    else:
        out = a.out or a.root
        cmd = "python3 tools/reference/hf_goldens.py golden --root %s --out %s %s" % (
            a.root, "<out>", " ".join(names))
        oks = []
        for n in names:
            try:
                oks.append(golden(a.root, out, n, cmd))
            except BaseException:  # keep going: the other fixtures' results help debugging
                import traceback
                traceback.print_exc()
                oks.append(False)
        if not all(oks):
            raise SystemExit("some goldens failed their checks")


if __name__ == "__main__":
    main()
