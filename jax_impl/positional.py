"""Positional encodings in JAX; mirrors numpy_impl/positional.py name for name (RoPE in both layouts)."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
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
from jax_impl._checks import all_finite

__all__ = [
    "sinusoidal_encoding",
    "PositionalEncoding",
    "learned_positional_encoding",
    "rope_cos_sin",
    "apply_rope",
    "rope_half_to_interleaved",
    "rope_interleaved_to_half",
]

ROPE_LAYOUTS = ("half", "interleaved")


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0, dtype=jnp.float64):
    """Interleaved sin/cos table, computed in float64 then cast (see numpy_impl for why).

    Shapes: -> (max_len, d_model); row 0 is [0, 1, 0, 1, ...]
    """
    check_positive_int("max_len", max_len)
    check_even("d_model", d_model, "the sinusoidal encoding")
    pos = jnp.arange(max_len, dtype=jnp.float64)[:, None]
    inv_freq = base ** (-jnp.arange(0, d_model, 2, dtype=jnp.float64) / d_model)
    angles = pos * inv_freq
    # Interleave: stack (sin, cos) on a new last axis, then flatten -> sin, cos, sin, cos, ...
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(max_len, d_model)
    return pe.astype(dtype)


class PositionalEncoding:
    """Adds the sinusoidal table to a batch-first input. Shapes: x (B, T, d_model) -> (B, T, d_model)"""

    def __init__(self, d_model: int, max_len: int = 5000, base: float = 10000.0):
        self.d_model, self.max_len = d_model, max_len
        self.pe = sinusoidal_encoding(max_len, d_model, base)

    def __call__(self, x):
        check_ndim("x", x, 3, "(B, T, d_model)")
        check_float("x", x)
        check_same("x", x.shape[-1], "d_model", self.d_model, "last-axis size")
        if x.shape[1] > self.max_len:
            raise InputError(f"x: expected at most max_len={self.max_len} positions, got {x.shape[1]}")
        return x + self.pe[: x.shape[1]].astype(x.dtype)


def learned_positional_encoding(x, table):
    """Shapes: x (B, T, C), table (max_len, C) -> (B, T, C)"""
    check_ndim("x", x, 3, "(B, T, C)")
    check_ndim("table", table, 2, "(max_len, C)")
    check_same("table", table.shape[1], "x's last axis (C)", x.shape[-1], "width")
    if x.shape[1] > table.shape[0]:
        raise InputError(f"x: expected at most {table.shape[0]} positions (rows of table), got {x.shape[1]}")
    return x + table[: x.shape[1]]


def rope_cos_sin(positions, d_head: int, base: float = 10000.0, dtype=jnp.float64, layout: str = "half"):
    """Shapes: positions (T,) or (B, T) -> cos, sin (T, D) or (B, T, D); the D/2 angles repeated
    over the two halves ("half") or each twice in a row ("interleaved"), built in float64"""
    check_choice("layout", layout, ROPE_LAYOUTS)
    check_even("d_head", d_head, "RoPE")
    positions = jnp.asarray(positions, dtype=jnp.float64)
    check_ndim("positions", positions, (1, 2), "(T,) or (B, T)")
    inv_freq = base ** (-jnp.arange(0, d_head, 2, dtype=jnp.float64) / d_head)
    angles = positions[..., None] * inv_freq
    if layout == "half":
        angles = jnp.concatenate([angles, angles], axis=-1)
    else:
        angles = jnp.repeat(angles, 2, axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


@partial(jax.jit, static_argnames="layout")
def _rotate(x, cos, sin, layout="half"):
    """x cos + R(x) sin, R turning each pair (a, b) into (-b, a)."""
    if layout == "half":
        d = x.shape[-1] // 2
        rotated = jnp.concatenate([-x[..., d:], x[..., :d]], axis=-1)
    else:
        pairs = x.reshape(x.shape[:-1] + (-1, 2))
        rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return x * cos + rotated * sin


def apply_rope(x, positions=None, base: float = 10000.0, layout: str = "half"):
    """Shapes: x (..., T, D), positions (T,) or (B, T) (default 0..T-1; (B, T) needs x (B, ..., T, D))
            -> (..., T, D); layout "half" (HF Llama, the default) or "interleaved" (Meta, GPT-J)"""
    check_choice("layout", layout, ROPE_LAYOUTS)
    check_min_ndim("x", x, 2, "(..., T, D)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    T, D = x.shape[-2], x.shape[-1]
    positions = np.arange(T) if positions is None else jnp.asarray(positions)
    check_positions(x, positions)
    cos, sin = rope_cos_sin(positions, D, base, dtype=x.dtype, layout=layout)
    if positions.ndim == 2:  # (B, T, D) -> (B, 1, ..., 1, T, D)
        lead = (x.shape[0],) + (1,) * (x.ndim - 3)
        cos, sin = cos.reshape(lead + (T, D)), sin.reshape(lead + (T, D))
    return _rotate(x, cos, sin, layout)


def rope_half_to_interleaved(w, n_heads: int):
    """Within each head: new row 2i = old row i, new row 2i + 1 = old row i + D/2.
    Shapes: w (n_heads * D, ...) -> same"""
    check_rope_rows(w, n_heads)
    D = w.shape[0] // n_heads
    return jnp.swapaxes(w.reshape((n_heads, 2, D // 2) + w.shape[1:]), 1, 2).reshape(w.shape)


def rope_interleaved_to_half(w, n_heads: int):
    """The inverse: new row i = old row 2i, new row i + D/2 = old row 2i + 1.
    Shapes: w (n_heads * D, ...) -> same"""
    check_rope_rows(w, n_heads)
    D = w.shape[0] // n_heads
    return jnp.swapaxes(w.reshape((n_heads, D // 2, 2) + w.shape[1:]), 1, 2).reshape(w.shape)
