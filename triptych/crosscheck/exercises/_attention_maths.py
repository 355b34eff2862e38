"""The attention half of blocks_attention.py's catalogue (masks, scaled dot-product attention forward
and backward, multi-head attention forward and backward): inputs, references and the readable maths
the named wrong variants are computed from. The leading underscore keeps this module out of the
catalogue's discovery.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.crosscheck.exercises._grad import autodiff, on_numpy


# ---------------------------------------------------------------- masks and the readable maths

def _causal(t_q, t_k):
    """Query i (the last t_q of t_k positions) sees keys j <= i + t_k - t_q."""
    return np.tril(np.ones((t_q, t_k), dtype=bool), k=t_k - t_q)


def _padded_causal(b, t_q, t_k):
    """Causal AND key padding; sequence 1 has no keys at all, so all its rows are fully masked."""
    lengths = np.array([t_k, 0, max(t_k // 2, 1), t_k - 1])[:b]
    pad = np.arange(t_k)[None, :] < lengths[:, None]  # (B, T_k)
    return _causal(t_q, t_k)[None, None] & pad[:, None, None, :]  # (B, 1, T_q, T_k)


def _softmax(s, axis=-1):
    """Softmax whose fully masked (all -inf) slices give zeros, as numpy_impl's attn_softmax."""
    top = np.max(s, axis=axis, keepdims=True)
    e = np.exp(s - np.where(np.isneginf(top), 0.0, top))
    d = e.sum(axis=axis, keepdims=True)
    return e / np.where(d == 0, 1.0, d)


def _attend(q, k, v, mask=None, scale=None, how="right"):
    """softmax(q k^T * scale, masked) v, or the named mistake `how` makes of it."""
    default = 1 / math.sqrt(q.shape[-1])
    scale = {"none": 1.0, "over_d": 1 / q.shape[-1], "default": default}.get(how, default if scale is None else scale)
    s = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        fill = {"finite": -1e9}.get(how, -np.inf)
        s = np.where(~mask if how == "inverted" else mask, s, fill)
    with np.errstate(invalid="ignore"):
        w = _softmax(s, axis=-2 if how == "queries" else -1)
    return (w @ v).astype(q.dtype), w.astype(q.dtype)


def _sdpa_inputs(b, h, t_q, t_k, d, mask=None, scale=None, grads=False):
    def make(rng, dt):
        i = {"q": rng.standard_normal((b, h, t_q, d)).astype(dt), "k": rng.standard_normal((b, h, t_k, d)).astype(dt),
             "v": rng.standard_normal((b, h, t_k, d)).astype(dt),
             "mask": None if mask is None else mask(b, t_q, t_k), "scale": scale}
        if grads:  # the backward's inputs: the forward's weights and an upstream gradient
            i["weights"] = _attend(i["q"], i["k"], i["v"], i["mask"], scale)[1]
            i["dout"] = rng.standard_normal((b, h, t_q, d)).astype(dt)
        return i
    return make


def _sdpab_ref(m, i):
    if on_numpy(i, "q"):
        return m["attention"].scaled_dot_product_attention_backward(i["dout"], i["q"], i["k"], i["v"], i["weights"],
                                                                    i["scale"])
    return autodiff(m, i, lambda m, j: m["attention"].scaled_dot_product_attention(
        j["q"], j["k"], j["v"], j["mask"], j["scale"])[0], ("q", "k", "v"), "dout")


def _sdpab(i, rowsum=True, scale_dq=True, scale_dk=True, swap=False, dv_transposed=True):
    q, k, v, w, dout = i["q"], i["k"], i["v"], i["weights"], i["dout"]
    scale = 1 / math.sqrt(q.shape[-1]) if i["scale"] is None else i["scale"]
    dw = dout @ np.swapaxes(v, -1, -2)  # out = w v
    dv = (np.swapaxes(w, -1, -2) if dv_transposed else w) @ dout
    ds = w * (dw - (dw * w).sum(-1, keepdims=True)) if rowsum else w * dw  # w = softmax(s)
    dq = ds @ k * (scale if scale_dq else 1.0)  # s = q k^T * scale
    dk = np.swapaxes(ds, -1, -2) @ q * (scale if scale_dk else 1.0)
    return (dq, dv, dk) if swap else (dq, dk, dv)


# ---------------------------------------------------------------- multi-head attention

_MHA_KEYS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o")


def _mha_inputs(b, t_q, c, heads, t_k=None, mask=None):
    def make(rng, dt):
        params = {k: (rng.standard_normal((c, c)) / math.sqrt(c) if k[0] == "w" else 0.1 * rng.standard_normal(c)).astype(dt)
                  for k in _MHA_KEYS}
        return {"x": rng.standard_normal((b, t_q, c)).astype(dt), "params": params, "n_heads": heads,
                "kv": None if t_k is None else rng.standard_normal((b, t_k, c)).astype(dt),
                "mask": None if mask is None else mask(b, t_q, t_k or t_q)}
    return make


def _mha(i, how="right"):
    x, p, h = i["x"], i["params"], i["n_heads"]
    kv = x if i["kv"] is None else i["kv"]
    lin = (lambda a, w, b: a @ w + b) if how == "untransposed" else (lambda a, w, b: a @ w.T + b)

    def split(t):
        B, T, C = t.shape
        return t.reshape(B, h, T, C // h) if how == "no_transpose" else t.reshape(B, T, h, C // h).transpose(0, 2, 1, 3)

    q, k, v = split(lin(x, p["w_q"], p["b_q"])), split(lin(kv, p["w_k"], p["b_k"])), split(lin(kv, p["w_v"], p["b_v"]))
    scale = 1 / math.sqrt(x.shape[-1]) if how == "d_model" else None
    heads, w = _attend(q, k, v, i["mask"], scale)
    merged = heads.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
    return (merged if how == "no_out" else lin(merged, p["w_o"], p["b_o"])).astype(x.dtype), w


def _mhab_inputs(b, t_q, t_k, c, heads, mask=None):
    def make(rng, dt):
        i = _mha_inputs(b, t_q, c, heads, t_k=t_k, mask=mask)(rng, dt)
        i["weights"] = _mha(i)[1]
        i["dout"] = rng.standard_normal((b, t_q, c)).astype(dt)
        return i
    return make


def _mhab_ref(m, i):
    if on_numpy(i, "x"):
        dx, dkv, g = m["multihead"].multihead_attention_backward(i["dout"], i["x"], i["params"], i["n_heads"],
                                                                 i["weights"], i["kv"])
        return (dx, dkv) + tuple(g[k] for k in _MHA_KEYS)
    return autodiff(m, i, lambda m, j: m["multihead"].multihead_attention(j["x"], j["params"], j["n_heads"], j["kv"],
                                                                          j["mask"])[0],
                    ("x", "kv") + tuple(f"params/{k}" for k in _MHA_KEYS), "dout")


def _mhab(i, rowsum=True, scale_by="d_head", dw_transposed=False):
    """multihead_attention's backward, step by step, or with the named mistake."""
    x, kv, p, h, w, dout = i["x"], i["kv"], i["params"], i["n_heads"], i["weights"], i["dout"]
    B, T, C = x.shape

    def split(t):
        return t.reshape(B, t.shape[1], h, C // h).transpose(0, 2, 1, 3)

    def merge(t):
        return t.transpose(0, 2, 1, 3).reshape(B, t.shape[2], C)

    def lin_back(dy, a, wt):  # y = a W^T + b
        dw = dy.reshape(-1, C).T @ a.reshape(-1, C)
        return dy @ wt, (dw.T if dw_transposed else dw), dy.sum((0, 1))

    q, k, v = (split(t @ p[f"w_{n}"].T + p[f"b_{n}"]) for t, n in ((x, "q"), (kv, "k"), (kv, "v")))
    g = {}
    dmerged, g["w_o"], g["b_o"] = lin_back(dout, merge(w @ v), p["w_o"])
    dheads = split(dmerged)
    dw = dheads @ np.swapaxes(v, -1, -2)
    dv = np.swapaxes(w, -1, -2) @ dheads
    ds = w * (dw - (dw * w).sum(-1, keepdims=True)) if rowsum else w * dw
    ds = ds / math.sqrt(C // h if scale_by == "d_head" else C)
    dx, g["w_q"], g["b_q"] = lin_back(merge(ds @ k), x, p["w_q"])
    dkv_k, g["w_k"], g["b_k"] = lin_back(merge(np.swapaxes(ds, -1, -2) @ q), kv, p["w_k"])
    dkv_v, g["w_v"], g["b_v"] = lin_back(merge(dv), kv, p["w_v"])
    return (dx, dkv_k + dkv_v) + tuple(g[n] for n in _MHA_KEYS)
