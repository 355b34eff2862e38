"""The model half of the `cs336` group (triptych/crosscheck/exercises/cs336.py): inputs shaped as Stanford
CS336 assignment 1's tests shape them, the handout's weight names mapped onto ours, references
through the three backends, and the named wrong variants, each computed from its definition.

The handout's weight names -> common.llama_config's:
    attn.q_proj / k_proj / v_proj / output_proj .weight  -> attn.w_q / w_k / w_v / w_o
    ln1.weight, ln2.weight                                -> attn_norm.weight, mlp_norm.weight
    ffn.w1 (gate), ffn.w3 (up), ffn.w2 (down) .weight     -> mlp.w_gate, mlp.w_up, mlp.w_down
    token_embeddings.weight, ln_final.weight, lm_head.weight -> embed.weight, norm.weight, lm_head.weight
"""
from __future__ import annotations

import math

import numpy as np

from triptych.common.llama_config import LlamaConfig

# Small sizes (the handout's are d_model 64, 4 heads, d_ff 128, vocab 10,000): every case runs in
# milliseconds in all three backends, and 4 heads of 4 channels still separate every layout mistake.
B, T, C, H, D_FF, VOCAB, LAYERS, THETA, MAX_LEN = 2, 6, 16, 4, 24, 50, 2, 10000.0, 32
EPS = 1e-5  # the handout's RMSNorm eps

BLOCK_NAMES = {"attn.q_proj.weight": "attn.w_q", "attn.k_proj.weight": "attn.w_k", "attn.v_proj.weight": "attn.w_v",
               "attn.output_proj.weight": "attn.w_o", "ln1.weight": "attn_norm.weight", "ln2.weight": "mlp_norm.weight",
               "ffn.w1.weight": "mlp.w_gate", "ffn.w3.weight": "mlp.w_up", "ffn.w2.weight": "mlp.w_down"}
LM_NAMES = {"token_embeddings.weight": "embed.weight", "ln_final.weight": "norm.weight",
            "lm_head.weight": "lm_head.weight"}


def _w(rng, rows, cols, dt):
    # 1/sqrt(fan_in): activations stay O(1), so float32 is judged on rounding, not on size.
    return (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(dt)


def _gain(rng, n, dt):
    return (1.0 + 0.2 * rng.standard_normal(n)).astype(dt)  # a trained gain: not all ones


def block_weights(rng, dt) -> dict:
    """One layer under the handout's names."""
    return {"attn.q_proj.weight": _w(rng, C, C, dt), "attn.k_proj.weight": _w(rng, C, C, dt),
            "attn.v_proj.weight": _w(rng, C, C, dt), "attn.output_proj.weight": _w(rng, C, C, dt),
            "ln1.weight": _gain(rng, C, dt), "ffn.w1.weight": _w(rng, D_FF, C, dt),
            "ffn.w2.weight": _w(rng, C, D_FF, dt), "ffn.w3.weight": _w(rng, D_FF, C, dt),
            "ln2.weight": _gain(rng, C, dt)}


def lm_weights(rng, dt) -> dict:
    w = {"token_embeddings.weight": rng.standard_normal((VOCAB, C)).astype(dt)}
    for i in range(LAYERS):
        w.update({f"layers.{i}.{k}": v for k, v in block_weights(rng, dt).items()})
    w.update({"ln_final.weight": _gain(rng, C, dt), "lm_head.weight": _w(rng, VOCAB, C, dt)})
    return w


def to_ours(weights: dict) -> dict:
    """Handout names -> ours, for one layer or a whole LM (any backend's arrays)."""
    out = {}
    for k, v in weights.items():
        if k in LM_NAMES:
            out[LM_NAMES[k]] = v
            continue
        prefix, rest = ("", k)
        if k.startswith("layers."):
            i, rest = k[len("layers."):].split(".", 1)
            prefix = f"layers.{i}."
        out[prefix + BLOCK_NAMES[rest]] = v
    return out


def lm_config(i: dict) -> LlamaConfig:
    return LlamaConfig(vocab_size=i["vocab_size"], block_size=i["context_length"], d_model=i["d_model"],
                       n_layers=i["num_layers"], n_heads=i["num_heads"], n_kv_heads=i["num_heads"], d_ff=i["d_ff"],
                       rope_base=float(i["rope_theta"]), rope_layout="interleaved", norm_eps=EPS,
                       tie_embeddings=False)


def positions_of(p):
    """token_positions as the handout passes them, (1, T) or (T,) or (B, T), in a form every backend's
    apply_rope takes: a leading axis of 1 is dropped (the same positions for every sequence)."""
    return p[0] if p is not None and len(p.shape) == 2 and p.shape[0] == 1 else p


# ---------------------------------------------------------------- inputs of the model exercises

def linear_inputs(lead):
    def make(rng, dt):
        return {"d_in": C, "d_out": D_FF, "weights": _w(rng, D_FF, C, dt),
                "in_features": rng.standard_normal(lead + (C,)).astype(dt)}
    return make


def embedding_inputs(rng, dt):
    return {"vocab_size": VOCAB, "d_model": C, "weights": rng.standard_normal((VOCAB, C)).astype(dt),
            "token_ids": rng.integers(0, VOCAB, size=(B, T)).astype(np.int64)}


def swiglu_inputs(rng, dt):
    return {"d_model": C, "d_ff": D_FF, "w1_weight": _w(rng, D_FF, C, dt), "w2_weight": _w(rng, C, D_FF, dt),
            "w3_weight": _w(rng, D_FF, C, dt), "in_features": rng.standard_normal((B, T, C)).astype(dt)}


def random_mask(rng, shape):
    """True = may attend (the handout's convention). Every query row keeps at least one key and loses
    at least one, so an inverted mask is never fully masked (no NaN to argue about) and never a no-op."""
    m = rng.random(shape) > 0.5
    rows = m.reshape(-1, shape[-1])
    rows[:, 0] |= ~rows.any(-1)
    rows[:, -1] &= ~rows.all(-1)
    return rows.reshape(shape)


def sdpa_inputs(lead, t_q, t_k, d, masked=True):
    def make(rng, dt):
        return {"Q": rng.standard_normal(lead + (t_q, d)).astype(dt), "K": rng.standard_normal(lead + (t_k, d)).astype(dt),
                "V": rng.standard_normal(lead + (t_k, d)).astype(dt),
                "mask": random_mask(rng, lead + (t_q, t_k)) if masked else None}
    return make


def attn_weights(rng, dt):
    return {"q_proj_weight": _w(rng, C, C, dt), "k_proj_weight": _w(rng, C, C, dt),
            "v_proj_weight": _w(rng, C, C, dt), "o_proj_weight": _w(rng, C, C, dt)}


def mha_inputs(rng, dt):
    return {"d_model": C, "num_heads": H, **attn_weights(rng, dt), "in_features": rng.standard_normal((B, T, C)).astype(dt)}


def mha_rope_inputs(start):
    def make(rng, dt):
        return {"d_model": C, "num_heads": H, "max_seq_len": MAX_LEN, "theta": THETA, **attn_weights(rng, dt),
                "in_features": rng.standard_normal((B, T, C)).astype(dt),
                "token_positions": (start + np.arange(T))[None, :].astype(np.int64)}  # (1, T), as the handout's test
    return make


def rope_inputs(lead, per_sequence):
    def make(rng, dt):
        pos = (rng.integers(0, MAX_LEN - T, size=(B, 1)) + np.arange(T)) if per_sequence else np.arange(T)
        return {"d_k": C, "theta": THETA, "max_seq_len": MAX_LEN,
                "in_query_or_key": rng.standard_normal(lead + (T, C)).astype(dt), "token_positions": pos.astype(np.int64)}
    return make


def block_inputs(rng, dt):
    return {"d_model": C, "num_heads": H, "d_ff": D_FF, "max_seq_len": MAX_LEN, "theta": THETA,
            "weights": block_weights(rng, dt), "in_features": rng.standard_normal((B, T, C)).astype(dt)}


def lm_inputs(t):
    def make(rng, dt):
        return {"vocab_size": VOCAB, "context_length": MAX_LEN // 2, "d_model": C, "num_layers": LAYERS,
                "num_heads": H, "d_ff": D_FF, "rope_theta": THETA, "weights": lm_weights(rng, dt),
                "in_indices": rng.integers(0, VOCAB, size=(B, t)).astype(np.int64)}
    return make


def rms_inputs(scale):
    def make(rng, dt):
        return {"d_model": C, "eps": EPS, "weights": _gain(rng, C, dt),
                "in_features": (scale * rng.standard_normal((B, T, C))).astype(dt)}
    return make


def x_inputs(shape, scale=1.0, **extra):
    return lambda rng, dt: {"in_features": (scale * rng.standard_normal(shape)).astype(dt), **extra}


def ce_inputs(n, v, scale=1.0):
    def make(rng, dt):
        return {"inputs": (scale * rng.random((n, v))).astype(dt), "targets": rng.integers(0, v, size=n).astype(np.int64)}
    return make


# ---------------------------------------------------------------- the wrong variants (NumPy, float64)

def _f64(a):
    return np.asarray(a, dtype=np.float64)


def rms(x, w, eps=EPS, eps_outside=False, axis=-1):
    x = _f64(x)
    ms = np.mean(x * x, axis=axis, keepdims=True)
    return x / (np.sqrt(ms) + eps if eps_outside else np.sqrt(ms + eps)) * _f64(w)


def silu(x):
    x = _f64(x)
    return x / (1.0 + np.exp(-x))


def swiglu(x, w1, w2, w3, swapped=False):
    gate, up = (w3, w1) if swapped else (w1, w3)
    x = _f64(x)
    return (silu(x @ _f64(gate).T) * (x @ _f64(up).T)) @ _f64(w2).T


def rope(x, positions, theta, layout="interleaved"):
    """RoPE in float64 with either channel pairing ("half": i with i + D/2)."""
    from numpy_impl.positional import apply_rope
    x = _f64(x)
    pos = np.arange(x.shape[-2]) if positions is None else np.asarray(positions_of(positions))
    return apply_rope(x, pos, base=float(theta), layout=layout)


def sdpa(q, k, v, mask=None, scale=True, invert=False):
    q, k, v = _f64(q), _f64(k), _f64(v)
    s = q @ np.swapaxes(k, -1, -2)
    if scale:
        s = s / math.sqrt(q.shape[-1])
    if mask is not None:
        keep = ~mask if invert else mask
        s = np.where(keep, s, -np.inf)
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ v


def mha(x, wq, wk, wv, wo, n_heads, positions=None, theta=None, layout="interleaved", causal=True):
    """Multi-head self-attention, causal unless told (RoPE when theta is given). x (B, T, C) -> (B, T, C)."""
    x = _f64(x)
    Bx, Tx, Cx = x.shape

    def heads(w):
        return (x @ _f64(w).T).reshape(Bx, Tx, n_heads, Cx // n_heads).transpose(0, 2, 1, 3)
    q, k, v = heads(wq), heads(wk), heads(wv)
    if theta is not None:
        q, k = rope(q, positions, theta, layout), rope(k, positions, theta, layout)
    a = sdpa(q, k, v, np.tril(np.ones((Tx, Tx), dtype=bool)) if causal else None)
    return a.transpose(0, 2, 1, 3).reshape(Bx, Tx, Cx) @ _f64(wo).T


def block(x, w: dict, n_heads, theta, post_norm=False, layout="interleaved", swapped=False):
    """One layer under the handout's names: pre-norm (right) or post-norm (the 2017 Transformer's)."""
    def attn(h):
        return mha(h, w["attn.q_proj.weight"], w["attn.k_proj.weight"], w["attn.v_proj.weight"],
                   w["attn.output_proj.weight"], n_heads, None, theta, layout)

    def ffn(h):
        return swiglu(h, w["ffn.w1.weight"], w["ffn.w2.weight"], w["ffn.w3.weight"], swapped)
    x = _f64(x)
    if post_norm:
        x = rms(x + attn(x), w["ln1.weight"])
        return rms(x + ffn(x), w["ln2.weight"])
    x = x + attn(rms(x, w["ln1.weight"]))
    return x + ffn(rms(x, w["ln2.weight"]))


def lm(i: dict, **variant):
    w = i["weights"]
    x = _f64(w["token_embeddings.weight"])[i["in_indices"]]
    for layer in range(i["num_layers"]):
        pre = f"layers.{layer}."
        x = block(x, {k[len(pre):]: v for k, v in w.items() if k.startswith(pre)}, i["num_heads"], i["rope_theta"],
                  **variant)
    return rms(x, w["ln_final.weight"]) @ _f64(w["lm_head.weight"]).T


def cast(fn):
    """A variant computed in float64, returned in the case's dtype (the dtype the user's code keeps)."""
    def run(i):
        dt = next(v.dtype for v in _arrays(i) if v.dtype.kind == "f")
        return np.asarray(fn(i)).astype(dt)
    return run


def _arrays(i):
    for v in i.values():
        if isinstance(v, dict):
            yield from _arrays(v)
        elif isinstance(v, np.ndarray):
            yield v
