"""Positional encodings: attention alone is blind to order, so position is added to (or rotated into)
the token vectors.

    sinusoidal  PE[pos, 2i] = sin(pos / 10000^(2i/d)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d))
    learned     x + table[pos]               (an embedding table trained with the model)
    rotary      rotate each (x_i, x_{i+D/2}) pair of q and k by the angle pos * theta_i,
                so q.k depends only on the distance between the two positions (RoPE, Llama layout)
"""
from __future__ import annotations

import numpy as np

from common.checks import InputError, check_finite, check_float, check_min_ndim, check_ndim, check_positive_int, check_same

__all__ = [
    "sinusoidal_encoding",
    "PositionalEncoding",
    "learned_positional_encoding",
    "rope_cos_sin",
    "apply_rope",
]
# Hand-written backward passes (NumPy only). The sinusoidal table has no parameters and is simply
# added, so its backward is the identity (PositionalEncoding.backward says so).
__all__ += [
    "learned_positional_encoding_backward",
    "apply_rope_backward",
]


def _check_even(name: str, d: int, what: str) -> None:
    check_positive_int(name, d)
    if d % 2:
        raise InputError(f"{name}: expected an even size ({what} pairs sin/cos channels), got {d}")


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0, dtype=np.float64) -> np.ndarray:
    """The classic interleaved table. Built in float64 whatever `dtype` says: sin(pos * w) in float32
    is off by ~3e-4 at pos 5000, far more than the rounding of the final cast.

    Shapes: -> (max_len, d_model); row 0 is [0, 1, 0, 1, ...]
    """
    check_positive_int("max_len", max_len)
    _check_even("d_model", d_model, "the sinusoidal encoding")
    pos = np.arange(max_len, dtype=np.float64)[:, None]  # (max_len, 1)
    inv_freq = base ** (-np.arange(0, d_model, 2, dtype=np.float64) / d_model)  # (d_model/2,)
    angles = pos * inv_freq  # (max_len, d_model/2)
    pe = np.empty((max_len, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angles)  # even channels
    pe[:, 1::2] = np.cos(angles)  # odd channels
    return pe.astype(dtype)


class PositionalEncoding:
    """Adds the sinusoidal table to a batch-first input (no dropout: this is the eval-mode layer).

    Shapes: x (B, T, d_model) -> (B, T, d_model)
    """

    def __init__(self, d_model: int, max_len: int = 5000, base: float = 10000.0):
        self.d_model, self.max_len = d_model, max_len
        self.pe = sinusoidal_encoding(max_len, d_model, base)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        check_ndim("x", x, 3, "(B, T, d_model)")
        check_float("x", x)
        check_same("x", x.shape[-1], "d_model", self.d_model, "last-axis size")
        if x.shape[1] > self.max_len:
            raise InputError(f"x: expected at most max_len={self.max_len} positions, got {x.shape[1]}")
        return x + self.pe[: x.shape[1]].astype(x.dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """out = x + pe: a constant was added, so the gradient passes through unchanged.

        Shapes: dout (B, T, d_model) -> dx (B, T, d_model)
        """
        return dout


def learned_positional_encoding(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Learned absolute positions: row t of a trained (max_len, C) table is added at position t.
    Unlike the sinusoids it has no row for positions beyond max_len, so it cannot extrapolate.

    Shapes: x (B, T, C), table (max_len, C) -> (B, T, C)
    """
    check_ndim("x", x, 3, "(B, T, C)")
    check_ndim("table", table, 2, "(max_len, C)")
    check_same("table", table.shape[1], "x's last axis (C)", x.shape[-1], "width")
    if x.shape[1] > table.shape[0]:
        raise InputError(f"x: expected at most {table.shape[0]} positions (rows of table), got {x.shape[1]}")
    return x + table[: x.shape[1]]


def learned_positional_encoding_backward(dout: np.ndarray, table: np.ndarray):
    """out = x + table[:T]: x gets dout unchanged; row t of the table collects dout at position t
    summed over the batch; rows beyond T were not used and get zero.

    Shapes: dout (B, T, C), table (max_len, C) -> dx (B, T, C), dtable (max_len, C)
    """
    dtable = np.zeros_like(table, dtype=dout.dtype)
    dtable[: dout.shape[1]] = dout.sum(axis=0)
    return dout, dtable


def rope_cos_sin(positions, d_head: int, base: float = 10000.0, dtype=np.float64):
    """cos and sin of pos * theta_i, theta_i = base^(-2i/D), duplicated over the two halves of the
    head (Llama's rotate_half layout: channel i pairs with channel i + D/2).

    Shapes: positions (T,) -> cos, sin (T, D)
    """
    _check_even("d_head", d_head, "RoPE rotates")
    positions = np.asarray(positions, dtype=np.float64)
    check_ndim("positions", positions, 1, "(T,)")
    inv_freq = base ** (-np.arange(0, d_head, 2, dtype=np.float64) / d_head)  # (D/2,)
    angles = positions[:, None] * inv_freq[None, :]  # (T, D/2)
    angles = np.concatenate([angles, angles], axis=-1)  # (T, D)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def apply_rope(x: np.ndarray, positions=None, base: float = 10000.0) -> np.ndarray:
    """Rotate each channel pair (x_i, x_{i+D/2}) by its position's angle:
    [x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]. Applied to queries and keys, not values.

    Shapes: x (..., T, D), positions (T,) (default 0..T-1) -> (..., T, D)
    """
    check_min_ndim("x", x, 2, "(..., T, D)")
    check_float("x", x)
    check_finite("x", np.isfinite(x).all())
    T, D = x.shape[-2], x.shape[-1]
    positions = np.arange(T) if positions is None else np.asarray(positions)
    check_same("positions", positions.shape[0] if positions.ndim == 1 else -1, "x's sequence axis (T)", T, "length")
    cos, sin = rope_cos_sin(positions, D, base, dtype=x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    rotated_half = np.concatenate([-x2, x1], axis=-1)  # the "rotate_half" of Llama
    return x * cos + rotated_half * sin


def apply_rope_backward(dout: np.ndarray, positions=None, base: float = 10000.0) -> np.ndarray:
    """A rotation's transpose is the rotation by the opposite angle, so the gradient is rotated
    back: with out = x cos + R(x) sin and R([x1, x2]) = [-x2, x1], dx = dout cos + R^T(dout sin),
    R^T([y1, y2]) = [y2, -y1].

    Shapes: dout (..., T, D), positions (T,) (default 0..T-1) -> dx (..., T, D)
    """
    T, D = dout.shape[-2], dout.shape[-1]
    positions = np.arange(T) if positions is None else np.asarray(positions)
    cos, sin = rope_cos_sin(positions, D, base, dtype=dout.dtype)
    ds = dout * sin  # out = ... + rotated_half * sin
    return dout * cos + np.concatenate([ds[..., D // 2:], -ds[..., : D // 2]], axis=-1)  # out = x * cos + R(x) * sin
