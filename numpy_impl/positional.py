"""Positional encodings: attention alone is blind to order, so position is added to (or rotated into)
the token vectors.

    sinusoidal  PE[pos, 2i] = sin(pos / 10000^(2i/d)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/d))
    learned     x + table[pos]               (an embedding table trained with the model)
    rotary      rotate each channel pair of q and k by the angle pos * theta_i, so q.k depends only
                on the distance between the two positions (RoPE). Two ways to pair the channels:
                "half" (x_i, x_{i+D/2}), Hugging Face Llama / GPT-NeoX, the default; and
                "interleaved" (x_2i, x_2i+1), Meta's original Llama / GPT-J / llama.cpp
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import (
    InputError,
    check_choice,
    check_finite,
    check_float,
    check_min_ndim,
    check_ndim,
    check_positive_int,
    check_same,
)
from triptych.common.backend_checks import check_even, check_positions, check_rope_rows

__all__ = [
    "sinusoidal_encoding",
    "PositionalEncoding",
    "learned_positional_encoding",
    "rope_cos_sin",
    "apply_rope",
    "rope_half_to_interleaved",
    "rope_interleaved_to_half",
]
# Hand-written backward passes (NumPy only). The sinusoidal table has no parameters and is simply
# added, so its backward is the identity (PositionalEncoding.backward says so).
__all__ += [
    "learned_positional_encoding_backward",
    "apply_rope_backward",
]

ROPE_LAYOUTS = ("half", "interleaved")


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0, dtype=np.float64) -> np.ndarray:
    """The classic interleaved table. Built in float64 whatever `dtype` says: sin(pos * w) in float32
    is off by ~3e-4 at pos 5000, far more than the rounding of the final cast.

    Shapes: -> (max_len, d_model); row 0 is [0, 1, 0, 1, ...]
    """
    check_positive_int("max_len", max_len)
    check_even("d_model", d_model, "the sinusoidal encoding")
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
    dtable = np.zeros_like(table, dtype=dout.dtype)  # rows beyond T: unused, zero gradient
    dtable[: dout.shape[1]] = dout.sum(axis=0)  # out = x + table[:T], table broadcast over the batch
    return dout, dtable  # out = x + ...: x's gradient is dout unchanged


def rope_cos_sin(positions, d_head: int, base: float = 10000.0, dtype=np.float64, layout: str = "half"):
    """cos and sin of pos * theta_i, theta_i = base^(-2i/D) for i < D/2, spread over the D channels
    the way `layout` pairs them: "half" repeats the D/2 angles over the two halves (channel i pairs
    with i + D/2), "interleaved" repeats each angle twice in a row (channels 2i and 2i + 1 pair).
    Built in float64 whatever `dtype` says, like the sinusoidal table.

    Shapes: positions (T,) or (B, T) -> cos, sin (T, D) or (B, T, D)
    """
    check_choice("layout", layout, ROPE_LAYOUTS)
    check_even("d_head", d_head, "RoPE")
    positions = np.asarray(positions, dtype=np.float64)
    check_ndim("positions", positions, (1, 2), "(T,) or (B, T)")
    inv_freq = base ** (-np.arange(0, d_head, 2, dtype=np.float64) / d_head)  # (D/2,)
    angles = positions[..., None] * inv_freq  # (..., T, D/2)
    if layout == "half":
        angles = np.concatenate([angles, angles], axis=-1)  # [t0 .. t_{D/2-1}, t0 .. t_{D/2-1}]
    else:
        angles = np.repeat(angles, 2, axis=-1)  # [t0, t0, t1, t1, ...]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def _rotate_pairs(x: np.ndarray, layout: str) -> np.ndarray:
    """R(x): each pair (a, b) -> (-b, a), the 90-degree turn that x cos + R(x) sin completes.
    "half": pairs (x_i, x_{i+D/2}), Llama's rotate_half; "interleaved": pairs (x_2i, x_2i+1)."""
    if layout == "half":
        x1, x2 = np.split(x, 2, axis=-1)
        return np.concatenate([-x2, x1], axis=-1)
    pairs = x.reshape(x.shape[:-1] + (-1, 2))
    return np.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


def _rotate_pairs_transposed(y: np.ndarray, layout: str) -> np.ndarray:
    """R^T = -R: each pair (a, b) -> (b, -a)."""
    return -_rotate_pairs(y, layout)


def _cos_sin_for(x, positions, base, layout):
    """cos, sin shaped to broadcast against x: (T, D), or (B, 1, ..., 1, T, D) for (B, T) positions."""
    T, D = x.shape[-2], x.shape[-1]
    positions = np.arange(T) if positions is None else np.asarray(positions)
    check_positions(x, positions)
    cos, sin = rope_cos_sin(positions, D, base, dtype=x.dtype, layout=layout)
    if positions.ndim == 2:
        lead = (x.shape[0],) + (1,) * (x.ndim - 3)
        cos, sin = cos.reshape(lead + (T, D)), sin.reshape(lead + (T, D))
    return cos, sin


def apply_rope(x: np.ndarray, positions=None, base: float = 10000.0, layout: str = "half") -> np.ndarray:
    """Rotate each channel pair (a, b) by its position's angle: (a, b) -> (a cos - b sin, b cos + a sin).
    Applied to queries and keys, not values: then q_m . k_n depends only on m - n.

    layout="half" (the default, what this function has always done): channel i pairs with i + D/2,
    as in GPT-NeoX and Hugging Face's Llama. layout="interleaved": channels 2i and 2i + 1 pair, as in
    RoFormer, GPT-J, Meta's original Llama code and llama.cpp. The same maths on permuted channels:
    rope_half_to_interleaved turns weights of one into the other.

    Shapes: x (..., T, D), positions (T,) or (B, T) (default 0..T-1; (B, T) needs x (B, ..., T, D))
            -> (..., T, D)
    """
    check_choice("layout", layout, ROPE_LAYOUTS)
    check_min_ndim("x", x, 2, "(..., T, D)")
    check_float("x", x)
    check_finite("x", np.isfinite(x).all())
    cos, sin = _cos_sin_for(x, positions, base, layout)
    return x * cos + _rotate_pairs(x, layout) * sin


def apply_rope_backward(dout: np.ndarray, positions=None, base: float = 10000.0, layout: str = "half") -> np.ndarray:
    """A rotation's transpose is the rotation by the opposite angle, so the gradient is rotated
    back: with out = x cos + R(x) sin, dx = dout cos + R^T(dout sin), R^T = -R (the pairs of `layout`).

    Shapes: dout (..., T, D), positions (T,) or (B, T) (default 0..T-1) -> dx (..., T, D)
    """
    cos, sin = _cos_sin_for(dout, positions, base, layout)
    return dout * cos + _rotate_pairs_transposed(dout * sin, layout)  # out = x * cos + R(x) * sin


def rope_half_to_interleaved(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a q or k projection (n_heads heads of D rows; for k, n_heads is the KV
    head count) so that interleaved RoPE computes what half RoPE did with the original: within each
    head, new row 2i = old row i and new row 2i + 1 = old row i + D/2 (Hugging Face -> GGUF, the
    permutation llama.cpp's converter applies). Attention scores are unchanged, since q and k are
    permuted alike; v and the output projection are not touched.

    Shapes: w (n_heads * D, ...) -> same
    """
    check_rope_rows(w, n_heads)
    D = w.shape[0] // n_heads
    return w.reshape((n_heads, 2, D // 2) + w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_interleaved_to_half(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse: new row i = old row 2i, new row i + D/2 = old row 2i + 1 (GGUF or Meta's original
    checkpoints -> Hugging Face; what HF's GGUF loader does).

    Shapes: w (n_heads * D, ...) -> same
    """
    check_rope_rows(w, n_heads)
    D = w.shape[0] // n_heads
    return w.reshape((n_heads, D // 2, 2) + w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
