"""The positions half of blocks_attention.py's catalogue (sinusoidal table, RoPE in both layouts
and its backward): inputs, references and the named wrong variants, each computed from its
definition. The leading underscore keeps this module out of the catalogue's discovery.
"""
from __future__ import annotations


import numpy as np

from triptych.crosscheck.exercises._grad import autodiff, on_numpy


# ---------------------------------------------------------------- positions

def _sinusoidal(i, how="right"):
    n, d, base = i["max_len"], i["d_model"], i["base"]
    pos = np.arange(1, n + 1.0) if how == "from_1" else np.arange(n, dtype=np.float64)
    two_i = np.arange(d // 2) if how == "i_not_2i" else np.arange(0, d, 2)
    ang = pos[:, None] * base ** (-two_i / d)
    if how == "concat":
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=-1)
    pe = np.empty((n, d))
    pe[:, 0::2], pe[:, 1::2] = (np.cos(ang), np.sin(ang)) if how == "swapped" else (np.sin(ang), np.cos(ang))
    return pe


def _rope(x, positions, base, layout, sign=1.0, i_not_2i=False, tables32=False):
    """Each channel pair rotated by sign * pos * theta_i, theta_i = base^(-2i/D). tables32: the
    angles, cos and sin built in float32 (torch's default dtype, `torch.arange(...).float()`) and
    applied to x in its own dtype."""
    T, D = x.shape[-2:]
    pos = np.arange(T, dtype=np.float64) if positions is None else np.asarray(positions, np.float64)
    two_i = np.arange(D // 2) if i_not_2i else np.arange(0, D, 2)
    if tables32:
        f32 = np.float32
        inv_freq = (f32(1.0) / f32(base) ** (two_i.astype(f32) / f32(D))).astype(f32)
        ang = (f32(sign) * pos.astype(f32)[..., None] * inv_freq).astype(f32)
    else:
        ang = sign * pos[..., None] * base ** (-two_i / D)  # (T, D/2) or (B, T, D/2)
    if pos.ndim == 2:
        ang = ang.reshape((x.shape[0],) + (1,) * (x.ndim - 3) + ang.shape[1:])
    cos, sin = np.cos(ang), np.sin(ang)  # float32 tables meet float64 x as float64
    if layout == "half":
        a, b = x[..., : D // 2], x[..., D // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1).astype(x.dtype)
    a, b = x[..., 0::2], x[..., 1::2]
    return np.stack([a * cos - b * sin, b * cos + a * sin], -1).reshape(x.shape).astype(x.dtype)


def _other(layout):
    return "interleaved" if layout == "half" else "half"


def _rope_inputs(shape, positions=None, layout="half", base=10000.0, grads=False):
    def make(rng, dt):
        i = {"x": rng.standard_normal(shape).astype(dt), "positions": positions, "base": base, "layout": layout}
        if isinstance(positions, str):  # "per-sequence": (B, T) offsets, as a KV cache holds them
            i["positions"] = np.arange(shape[-2])[None, :] + rng.integers(0, 50, size=(shape[0], 1))
        if grads:
            i["dout"] = rng.standard_normal(shape).astype(dt)
        return i
    return make


def _ropeb_ref(m, i):
    if on_numpy(i, "x"):
        return m["positional"].apply_rope_backward(i["dout"], i["positions"], i["base"], i["layout"])
    return autodiff(m, i, lambda m, j: m["positional"].apply_rope(j["x"], j["positions"], j["base"], j["layout"]),
                    ("x",), "dout")[0]


def _ropeb_cos_only(i):
    """dout * cos: rotating by +angle and by -angle and averaging cancels the sin terms exactly."""
    d, p, base, lay = i["dout"], i["positions"], i["base"], i["layout"]
    return 0.5 * (_rope(d, p, base, lay) + _rope(d, p, base, lay, sign=-1.0))
