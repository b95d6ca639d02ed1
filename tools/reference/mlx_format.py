"""MLX checkpoint helpers for fmoe's reference goldens (numpy only).

Written from the facts in shared/reference/qwen35moe.md (section 2.2 and 6.6) and
MLX's affine quantizer rules (mlx/backend/cuda/quantized/affine_quantize.cu), mirrored
the same way as fmoe's quant/quantize.go:

* bf16: round to nearest even (torch/MLX casts); flash-moe's 2-bit repacker truncates.
* affine quantization, groups of `group` consecutive input columns per row:
  lo = min(w), hi = max(0, max(w)); scale = max((hi-lo)/(2^bits-1), 1e-7); edge = lo if
  |lo| > |hi| else hi (scale negated); q0 = roundf(edge/scale); if q0 != 0: scale = edge/q0,
  bias = edge, else bias = 0; q = min(roundf((w-bias)/scale), 2^bits-1). All in float32,
  roundf = half away from zero; scales/biases stored as bf16 (RNE) after the codes are made.
* packing: little-endian uint32 words, LSB first, 32/bits codes per word.
* flash-moe 2-bit requantization ("minmax"): f = q4*s4 + b4 (f32); s2 = (max-min)/3, b2 = min;
  divisor 1 where s2 == 0; q2 = clip(round-half-even((f-b2)/s2), 0, 3); s2/b2 stored as
  bf16 by truncation.
"""

import json
import struct

import numpy as np

DTYPES = {"U32": np.uint32, "BF16": np.uint16, "F32": np.float32, "U8": np.uint8,
          "I32": np.int32, "F16": np.float16}


# ---------------------------------------------------------------- bf16

def bf16_rne(x):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_trunc(x):
    """float32 array -> uint16 bf16 bit patterns, truncation (flash-moe 2-bit)."""
    return (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def bf16_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(x):
    """float32 values rounded to the nearest bf16, as float32."""
    return bf16_to_f32(bf16_rne(x))


# ---------------------------------------------------------------- quantization

def roundf(x):
    """C roundf: half away from zero (exact via float64)."""
    x = np.asarray(x, dtype=np.float32)
    a = np.floor(np.abs(x).astype(np.float64) + 0.5)
    return (np.sign(x).astype(np.float64) * a).astype(np.float32)


def pack(codes, bits):
    """codes [..., cols] (ints in [0, 2^bits)) -> uint32 [..., cols*bits/32], LSB first."""
    per = 32 // bits
    c = np.asarray(codes).astype(np.uint32)
    shape = c.shape
    assert shape[-1] % per == 0, shape
    c = c.reshape(shape[:-1] + (shape[-1] // per, per))
    out = np.zeros(c.shape[:-1], dtype=np.uint32)
    for i in range(per):
        out |= c[..., i] << np.uint32(bits * i)
    return out


def unpack(words, bits):
    """uint32 [..., n] -> codes uint8 [..., n*32/bits]."""
    per = 32 // bits
    w = np.asarray(words, dtype=np.uint32)
    mask = np.uint32((1 << bits) - 1)
    parts = [((w >> np.uint32(bits * i)) & mask) for i in range(per)]
    out = np.stack(parts, axis=-1).astype(np.uint8)
    return out.reshape(w.shape[:-1] + (w.shape[-1] * per,))


def quantize(w, bits, group=64):
    """MLX affine quantization of w [..., cols] (float32) along the last axis.

    Returns (wq uint32 [..., cols*bits/32], scales uint16 bf16 [..., cols/group], biases)."""
    w = np.asarray(w, dtype=np.float32)
    shape = w.shape
    cols = shape[-1]
    assert cols % group == 0 and bits in (2, 4, 8), (shape, bits, group)
    g = w.reshape(-1, group)
    n_bins = np.float32((1 << bits) - 1)
    lo = g.min(axis=1)
    hi = np.maximum(g.max(axis=1), np.float32(0))
    scale = np.maximum((hi - lo) / n_bins, np.float32(1e-7)).astype(np.float32)
    side = np.abs(lo) > np.abs(hi)
    edge = np.where(side, lo, hi).astype(np.float32)
    scale = np.where(side, scale, -scale).astype(np.float32)
    q0 = roundf(edge / scale)
    at_zero = q0 == 0
    safe_q0 = np.where(at_zero, np.float32(1), q0).astype(np.float32)
    scale = np.where(at_zero, scale, edge / safe_q0).astype(np.float32)
    bias = np.where(at_zero, np.float32(0), edge).astype(np.float32)
    q = roundf((g - bias[:, None]) / scale[:, None])
    q = np.clip(q, 0, n_bins).astype(np.uint32)
    wq = pack(q.reshape(shape), bits)
    ngroups = shape[:-1] + (cols // group,)
    return wq, bf16_rne(scale).reshape(ngroups), bf16_rne(bias).reshape(ngroups)


def dequantize(wq, scales, biases, bits, group=64):
    """float32 [..., cols]: q*scale + bias with bf16 scale/bias widened exactly (f32 math)."""
    q = unpack(wq, bits).astype(np.float32)
    shape = q.shape
    cols = shape[-1]
    q = q.reshape(shape[:-1] + (cols // group, group))
    s = bf16_to_f32(scales)[..., None]
    b = bf16_to_f32(biases)[..., None]
    out = (q * s).astype(np.float32) + b
    return out.astype(np.float32).reshape(shape)


def requant_minmax_2bit(wq4, s4, b4, group=64):
    """flash-moe repack_experts_2bit.py's requantization of one 4-bit matrix [rows, cols].

    Returns (wq2 uint32 [rows, cols/16], s2 bf16-trunc uint16, b2 bf16-trunc uint16)."""
    codes = unpack(wq4, 4).astype(np.float32)
    rows, cols = codes.shape
    ng = cols // group
    f = codes.reshape(rows, ng, group) * bf16_to_f32(s4)[:, :, None] + bf16_to_f32(b4)[:, :, None]
    f = f.astype(np.float32)
    lo = f.min(axis=2, keepdims=True)
    hi = f.max(axis=2, keepdims=True)
    s2 = ((hi - lo) / np.float32(3.0)).astype(np.float32)
    div = np.where(s2 == 0, np.float32(1.0), s2).astype(np.float32)
    q = np.clip(np.round((f - lo) / div), 0, 3).astype(np.uint8)
    wq2 = pack(q.reshape(rows, cols), 2)
    return wq2, bf16_trunc(s2[:, :, 0]), bf16_trunc(lo[:, :, 0])


# ---------------------------------------------------------------- safetensors

def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, numpy array) written in list order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    off = 0
    blobs = []
    for name, dtype, shape, arr in tensors:
        data = np.ascontiguousarray(arr, dtype=DTYPES[dtype]).tobytes()
        n = int(np.prod(shape)) * np.dtype(DTYPES[dtype]).itemsize
        assert len(data) == n, (name, dtype, shape, len(data))
        header[name] = {"dtype": dtype, "shape": [int(s) for s in shape],
                        "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """-> (dict name -> numpy array (BF16 as uint16 bit patterns), dict name -> dtype str)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    arrays, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dt = DTYPES[info["dtype"]]
        arrays[name] = np.frombuffer(data[a:b], dtype=dt).reshape(info["shape"])
        dtypes[name] = info["dtype"]
    return arrays, dtypes


def read_checkpoint(model_dir):
    """All tensors of a single-file or sharded checkpoint directory."""
    import os
    idx = os.path.join(model_dir, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    arrays, dtypes = {}, {}
    for fn in files:
        a, d = read_safetensors(os.path.join(model_dir, fn))
        arrays.update(a)
        dtypes.update(d)
    return arrays, dtypes
