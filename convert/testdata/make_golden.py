#!/usr/bin/env python3
"""Make the flash-moe goldens for fmoe's convert and pack tests (Python 3 stdlib only).

  python3 convert/testdata/make_golden.py /work/.mirror/danveloper+flash-moe/repo

1. Writes tiny-mlx/: a small MLX-style Qwen3.5-MoE checkpoint (config.json, two
   safetensors shards + model.safetensors.index.json) with deterministic
   pseudo-random bytes: 11 layers (so "layers.10" sorts before "layers.2"),
   tensors of odd byte sizes (alignment padding), vision tensors (skipped),
   stacked routed experts (4 experts, hidden 32, moe intermediate 32, 4-bit, group 32).
   (No model.visual.* tensor: real MLX checkpoints have none, and package hfconv
   takes top-level model.* names for an HF release. The plan tests cover that rule.)
2. Runs flash-moe's metal_infer/extract_weights.py (git HEAD, unmodified) on it ->
   golden/model_weights.bin, golden/model_weights.json. The script imports numpy
   without using it; a stub module stands in when numpy is absent.
3. Builds flash-moe's expert_index.json (reference section 6.4) and runs
   repack_experts.py's repack_layer/write_layout (git HEAD, unmodified) with its
   module constants (COMPONENTS, EXPERT_SIZE, NUM_EXPERTS, NUM_LAYERS, LAYER_SIZE)
   set to the tiny dims -> golden/packed_experts/layer_{00,01,10}.bin + layout.json.
"""
import importlib.util, json, os, shutil, struct, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CKPT = os.path.join(HERE, "tiny-mlx")
GOLD = os.path.join(HERE, "golden")
H, I, E, L, V, G, BITS = 32, 32, 4, 11, 64, 32, 4
P = "language_model."

state = 0x1234567


def rnd(n):
    global state
    out = bytearray(n)
    for i in range(n):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (state >> 16) & 0xFF
    return bytes(out)


SIZES = {"U32": 4, "BF16": 2, "F32": 4}
tensors = {}  # name -> (dtype, shape)


def add(name, dtype, shape):
    tensors[name] = (dtype, shape)


def qlin(path, out, inp, stack=None):
    pre = [stack] if stack else []
    add(path + ".weight", "U32", pre + [out, inp * BITS // 32])
    add(path + ".scales", "BF16", pre + [out, inp // G])
    add(path + ".biases", "BF16", pre + [out, inp // G])


qlin(P + "lm_head", V, H)
qlin(P + "model.embed_tokens", V, H)
add(P + "model.norm.weight", "BF16", [H])
for l in range(L):
    b = P + "model.layers.%d." % l
    add(b + "input_layernorm.weight", "BF16", [H])
    add(b + "post_attention_layernorm.weight", "BF16", [H])
    if (l + 1) % 4 == 0:
        qlin(b + "self_attn.o_proj", H, 64)
        add(b + "self_attn.q_norm.weight", "BF16", [16])
    else:
        add(b + "linear_attn.A_log", "F32", [3])          # 12 bytes: padding follows
        add(b + "linear_attn.conv1d.weight", "BF16", [5, 4, 1])
        add(b + "linear_attn.dt_bias", "BF16", [3])
    qlin(b + "mlp.gate", E, H)
    qlin(b + "mlp.shared_expert.gate_proj", I, H)
    qlin(b + "mlp.shared_expert_gate", 1, H)
    qlin(b + "mlp.switch_mlp.gate_proj", I, H, E)
    qlin(b + "mlp.switch_mlp.up_proj", I, H, E)
    qlin(b + "mlp.switch_mlp.down_proj", H, I, E)
add("vision_tower.patch_embed.weight", "BF16", [4, 3])


def write_safetensors(path, names):
    header, blobs, off = {}, [], 0
    for n in reversed(names):  # data order differs from name order on purpose
        dt, shape = tensors[n]
        size = SIZES[dt]
        for d in shape:
            size *= d
        header[n] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + size]}
        blobs.append(rnd(size))
        off += size
    header["__metadata__"] = {"format": "mlx"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    return header, 8 + len(hb)


def make_checkpoint():
    shutil.rmtree(CKPT, ignore_errors=True)
    os.makedirs(CKPT)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[0::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map, headers = {}, {}
    for fn, ns in shards.items():
        headers[fn] = write_safetensors(os.path.join(CKPT, fn), ns)
        for n in ns:
            weight_map[n] = fn
    with open(os.path.join(CKPT, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    cfg = {
        "model_type": "qwen3_5_moe",
        "quantization": {"group_size": G, "bits": BITS},
        "text_config": {
            "model_type": "qwen3_5_moe_text", "hidden_size": H, "num_hidden_layers": L,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": V,
            "rms_norm_eps": 1e-6, "num_experts": E, "num_experts_per_tok": 2,
            "moe_intermediate_size": I, "shared_expert_intermediate_size": I,
            "full_attention_interval": 4, "linear_num_key_heads": 1, "linear_num_value_heads": 2,
            "linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_conv_kernel_dim": 4,
            "rope_theta": 10000000.0, "partial_rotary_factor": 0.25, "tie_word_embeddings": False,
            "eos_token_id": 1,
        },
    }
    with open(os.path.join(CKPT, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return headers, weight_map


def run_extract(fm):
    stub = tempfile.mkdtemp()
    try:
        import numpy  # noqa: F401
    except ImportError:
        open(os.path.join(stub, "numpy.py"), "w").close()
    script = os.path.join(stub, "extract_weights.py")
    with open(script, "wb") as f:
        f.write(subprocess.check_output(["git", "-C", fm, "show", "HEAD:metal_infer/extract_weights.py"]))
    env = dict(os.environ, PYTHONPATH=stub)
    # The manifest's "model" is the path as given: run from HERE with a relative path.
    subprocess.check_call([sys.executable, script, "--model", "tiny-mlx", "--output", "golden"], cwd=HERE, env=env,
                          stdout=subprocess.DEVNULL)
    shutil.rmtree(stub)


def run_repack(fm, headers, weight_map, layers=(0, 1, 10)):
    src = subprocess.check_output(["git", "-C", fm, "show", "HEAD:repack_experts.py"])
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "repack_experts.py")
    with open(path, "wb") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("repack_experts", path)
    rp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rp)
    comps, off = [], 0
    for proj, out, inp in (("gate_proj", I, H), ("up_proj", I, H), ("down_proj", H, I)):
        for part, dt, shape in (("weight", "U32", [out, inp * BITS // 32]), ("scales", "BF16", [out, inp // G]),
                                ("biases", "BF16", [out, inp // G])):
            size = SIZES[dt] * shape[0] * shape[1]
            comps.append({"name": proj + "." + part, "offset": off, "size": size, "dtype": dt, "shape": shape})
            off += size
    rp.COMPONENTS, rp.EXPERT_SIZE, rp.NUM_EXPERTS, rp.NUM_LAYERS = comps, off, E, L
    rp.LAYER_SIZE = E * off
    reads = {}
    for l in range(L):
        reads[str(l)] = {}
        for c in comps:
            n = P + "model.layers.%d.mlp.switch_mlp.%s" % (l, c["name"])
            fn = weight_map[n]
            hdr, data_start = headers[fn]
            a, b = hdr[n]["data_offsets"]
            reads[str(l)][c["name"]] = {"file": fn, "abs_offset": data_start + a, "expert_stride": (b - a) // E,
                                        "expert_size": (b - a) // E}
    assert rp.verify_component_sizes(reads)
    out = os.path.join(GOLD, "packed_experts")
    os.makedirs(out, exist_ok=True)
    fds = rp.open_source_files(reads, CKPT, list(layers))
    for l in layers:
        rp.repack_layer(l, reads, CKPT, fds, out)
    rp.write_layout(out)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    fm = sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror/danveloper+flash-moe/repo"
    shutil.rmtree(GOLD, ignore_errors=True)
    headers, wm = make_checkpoint()
    run_extract(fm)
    run_repack(fm, headers, wm)
    rev = subprocess.check_output(["git", "-C", fm, "rev-parse", "HEAD"]).decode().strip()
    with open(os.path.join(GOLD, "FLASHMOE_COMMIT"), "w") as f:
        f.write(rev + "\n")
