"""A plain numpy (float64) Qwen3.5-MoE text forward pass, written from
shared/reference/qwen35moe.md section 3. It is a second opinion next to HF transformers:
hf_goldens.py checks that HF's logits and this code agree on every fixture, which proves the
committed checkpoint + golden pair is self-consistent (the weights HF ran are the ones the
checkpoint holds, in the conventions the reference describes).

Weights come in the MLX convention (`effective_weights` in hf_goldens.py): names without the
`language_model.` prefix, quantized tensors dequantized to float32, zero-centred norms already
+1 shifted, linear_attn.norm plain, conv1d [C, K, 1].
"""

import numpy as np


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _l2n(x):
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + 1e-6)


class Config:
    def __init__(self, tc):
        self.H = tc["hidden_size"]
        self.L = tc["num_hidden_layers"]
        self.nh = tc["num_attention_heads"]
        self.nkv = tc["num_key_value_heads"]
        self.hd = tc["head_dim"]
        self.eps = tc["rms_norm_eps"]
        self.E = tc["num_experts"]
        self.topk = tc["num_experts_per_tok"]
        self.Hk = tc["linear_num_key_heads"]
        self.Hv = tc["linear_num_value_heads"]
        self.Dk = tc["linear_key_head_dim"]
        self.Dv = tc["linear_value_head_dim"]
        self.K = tc["linear_conv_kernel_dim"]
        rp = tc.get("rope_parameters") or {}
        self.theta = rp.get("rope_theta", tc.get("rope_theta"))
        self.prf = tc.get("partial_rotary_factor", rp.get("partial_rotary_factor"))
        lt = tc.get("layer_types")
        if not lt:
            n = tc["full_attention_interval"]
            lt = ["full_attention" if (i + 1) % n == 0 else "linear_attention" for i in range(self.L)]
        self.layer_types = lt


def attention(cfg, W, p, x):
    T = x.shape[0]
    nh, nkv, hd = cfg.nh, cfg.nkv, cfg.hd
    P = (x @ W[p + "q_proj.weight"].T).reshape(T, nh, 2 * hd)
    q, gate = P[:, :, :hd], P[:, :, hd:].reshape(T, nh * hd)
    k = (x @ W[p + "k_proj.weight"].T).reshape(T, nkv, hd)
    v = (x @ W[p + "v_proj.weight"].T).reshape(T, nkv, hd)
    q = _rms(q, W[p + "q_norm.weight"], cfg.eps)
    k = _rms(k, W[p + "k_norm.weight"], cfg.eps)
    rd = int(hd * cfg.prf)
    half = rd // 2
    inv = 1.0 / cfg.theta ** (np.arange(0, rd, 2, dtype=np.float64) / rd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(t):
        t = t.copy()
        a, b = t[..., :half].copy(), t[..., half:rd].copy()
        t[..., :half] = a * cos - b * sin
        t[..., half:rd] = b * cos + a * sin
        return t

    q, k = rope(q), rope(k)
    grp = nh // nkv
    out = np.zeros((T, nh, hd))
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for j in range(nh):
        kv = j // grp
        s = q[:, j, :] @ k[:, kv, :].T / np.sqrt(hd) + mask
        s = np.exp(s - s.max(axis=1, keepdims=True))
        s /= s.sum(axis=1, keepdims=True)
        out[:, j, :] = s @ v[:, kv, :]
    o = out.reshape(T, nh * hd) * _sigmoid(gate)
    return o @ W[p + "o_proj.weight"].T


def gated_delta_net(cfg, W, p, x):
    T = x.shape[0]
    Hk, Hv, Dk, Dv, K = cfg.Hk, cfg.Hv, cfg.Dk, cfg.Dv, cfg.K
    kd = Hk * Dk
    m = x @ W[p + "in_proj_qkv.weight"].T
    z = (x @ W[p + "in_proj_z.weight"].T).reshape(T, Hv, Dv)
    b = x @ W[p + "in_proj_b.weight"].T
    a = x @ W[p + "in_proj_a.weight"].T
    cw = W[p + "conv1d.weight"].reshape(m.shape[1], K)  # [C, K, 1] -> [C, K]
    mp = np.concatenate([np.zeros((K - 1, m.shape[1])), m], axis=0)
    y = np.zeros_like(m)
    for t in range(T):
        y[t] = np.sum(mp[t:t + K].T * cw, axis=1)
    y = _silu(y)
    q = _l2n(y[:, :kd].reshape(T, Hk, Dk)) / np.sqrt(Dk)
    k = _l2n(y[:, kd:2 * kd].reshape(T, Hk, Dk))
    v = y[:, 2 * kd:].reshape(T, Hv, Dv)
    beta = _sigmoid(b)
    g = -np.exp(W[p + "A_log"]) * _softplus(a + W[p + "dt_bias"])
    alpha = np.exp(g)
    S = np.zeros((Hv, Dk, Dv))
    o = np.zeros((T, Hv, Dv))
    rep = Hv // Hk
    for t in range(T):
        for h in range(Hv):
            kh = h // rep
            S[h] *= alpha[t, h]
            mem = k[t, kh] @ S[h]
            delta = (v[t, h] - mem) * beta[t, h]
            S[h] += np.outer(k[t, kh], delta)
            o[t, h] = q[t, kh] @ S[h]
    o = _rms(o, W[p + "norm.weight"], cfg.eps) * _silu(z)
    return o.reshape(T, Hv * Dv) @ W[p + "out_proj.weight"].T


def moe(cfg, W, p, x):
    logits = x @ W[p + "gate.weight"].T
    pr = np.exp(logits - logits.max(axis=1, keepdims=True))
    pr /= pr.sum(axis=1, keepdims=True)
    G, U, D = W[p + "switch_mlp.gate_proj.weight"], W[p + "switch_mlp.up_proj.weight"], W[p + "switch_mlp.down_proj.weight"]
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        top = np.argsort(-pr[t], kind="stable")[:cfg.topk]
        w = pr[t, top] / pr[t, top].sum()
        for e, we in zip(top, w):
            h = _silu(G[e] @ x[t]) * (U[e] @ x[t])
            out[t] += we * (D[e] @ h)
    s = (_silu(x @ W[p + "shared_expert.gate_proj.weight"].T) * (x @ W[p + "shared_expert.up_proj.weight"].T)) @ W[p + "shared_expert.down_proj.weight"].T
    gamma = _sigmoid(x @ W[p + "shared_expert_gate.weight"].T)
    return out + gamma * s


def forward(tc, W, ids):
    """Logits [T, V] (float64) for the whole sequence `ids`, plus hidden states:
    dict(embed [T,H], layers [L][T,H] (each layer's output), final_norm [T,H])."""
    cfg = Config(tc)
    W = {k: np.asarray(v, dtype=np.float64) for k, v in W.items()}
    h = W["model.embed_tokens.weight"][np.asarray(ids)]
    hs = {"embed": h.copy(), "layers": []}
    for i in range(cfg.L):
        p = "model.layers.%d." % i
        x = _rms(h, W[p + "input_layernorm.weight"], cfg.eps)
        if cfg.layer_types[i] == "full_attention":
            h = h + attention(cfg, W, p + "self_attn.", x)
        else:
            h = h + gated_delta_net(cfg, W, p + "linear_attn.", x)
        x = _rms(h, W[p + "post_attention_layernorm.weight"], cfg.eps)
        h = h + moe(cfg, W, p + "mlp.", x)
        hs["layers"].append(h.copy())
    h = _rms(h, W["model.norm.weight"], cfg.eps)
    hs["final_norm"] = h
    return h @ W["lm_head.weight"].T, hs
