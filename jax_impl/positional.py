"""Positional encodings in JAX; mirrors numpy_impl/positional.py name for name."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from common.checks import InputError, check_finite, check_float, check_min_ndim, check_ndim, check_positive_int, check_same
from jax_impl._checks import all_finite

__all__ = [
    "sinusoidal_encoding",
    "PositionalEncoding",
    "learned_positional_encoding",
    "rope_cos_sin",
    "apply_rope",
]


def _check_even(name: str, d: int, what: str) -> None:
    check_positive_int(name, d)
    if d % 2:
        raise InputError(f"{name}: expected an even size ({what} pairs sin/cos channels), got {d}")


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0, dtype=jnp.float64):
    """Interleaved sin/cos table, computed in float64 then cast (see numpy_impl for why).

    Shapes: -> (max_len, d_model); row 0 is [0, 1, 0, 1, ...]
    """
    check_positive_int("max_len", max_len)
    _check_even("d_model", d_model, "the sinusoidal encoding")
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


def rope_cos_sin(positions, d_head: int, base: float = 10000.0, dtype=jnp.float64):
    """Shapes: positions (T,) -> cos, sin (T, D), halves duplicated (Llama layout)"""
    _check_even("d_head", d_head, "RoPE rotates")
    positions = jnp.asarray(positions, dtype=jnp.float64)
    check_ndim("positions", positions, 1, "(T,)")
    inv_freq = base ** (-jnp.arange(0, d_head, 2, dtype=jnp.float64) / d_head)
    angles = positions[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


@jax.jit
def _rotate(x, cos, sin):
    d = x.shape[-1] // 2
    rotated_half = jnp.concatenate([-x[..., d:], x[..., :d]], axis=-1)
    return x * cos + rotated_half * sin


def apply_rope(x, positions=None, base: float = 10000.0):
    """Shapes: x (..., T, D), positions (T,) (default 0..T-1) -> (..., T, D)"""
    check_min_ndim("x", x, 2, "(..., T, D)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    T, D = x.shape[-2], x.shape[-1]
    positions = np.arange(T) if positions is None else positions
    check_same("positions", positions.shape[0] if positions.ndim == 1 else -1, "x's sequence axis (T)", T, "length")
    cos, sin = rope_cos_sin(positions, D, base, dtype=x.dtype)
    return _rotate(x, cos, sin)
