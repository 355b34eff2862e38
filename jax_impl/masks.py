"""Attention masks in JAX (bool, True = may attend); mirrors numpy_impl/masks.py name for name,
including its position convention (query i at position i + offset) and the ALiBi bias."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.checks import InputError, check_min_ndim, check_ndim, check_positive_int
from triptych.common.backend_checks import check_offset

__all__ = [
    "make_causal_mask",
    "make_key_padding_mask",
    "padding_to_attention_mask",
    "combine_masks",
    "to_torch_mha_mask",
    "from_torch_mha_mask",
    "make_sliding_window_mask",
    "alibi_slopes",
    "alibi_bias",
]


def make_causal_mask(t_q: int, t_k: int | None = None, offset: int = 0):
    """Query i may attend to key j when j <= i + offset (offset = t_k - t_q for a KV cache).

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    return jnp.tril(jnp.ones((t_q, t_k), dtype=bool), k=offset)


def make_key_padding_mask(lengths, t_k: int):
    """Shapes: lengths (B,) ints -> (B, T_k) bool, True for the first lengths[b] keys"""
    lengths_np = np.asarray(lengths)
    check_ndim("lengths", lengths_np, 1, "(B,)")
    check_positive_int("t_k", t_k)
    if not np.issubdtype(lengths_np.dtype, np.integer):
        raise InputError(f"lengths: expected integers, got dtype {lengths_np.dtype}")
    if lengths_np.size and (lengths_np.min() < 0 or lengths_np.max() > t_k):
        raise InputError(f"lengths: expected values in [0, t_k={t_k}], got {lengths_np.tolist()}")
    return jnp.arange(t_k)[None, :] < jnp.asarray(lengths_np)[:, None]


def padding_to_attention_mask(key_padding):
    """Shapes: (B, T_k) bool -> (B, 1, 1, T_k) bool"""
    check_ndim("key_padding", key_padding, 2, "(B, T_k)")
    return key_padding[:, None, None, :]


def combine_masks(*masks):
    """Logical AND with broadcasting; None entries skipped.

    Shapes: each broadcastable to (..., T_q, T_k) -> their broadcast shape
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    for i, m in enumerate(present):
        if m.dtype != jnp.bool_:
            raise InputError(f"masks[{i}]: expected dtype bool (True = may attend), got dtype {m.dtype}")
    try:
        shape = np.broadcast_shapes(*(tuple(m.shape) for m in present))
    except ValueError:
        shapes = ", ".join(str(tuple(m.shape)) for m in present)
        raise InputError(f"masks: expected mutually broadcastable shapes, got {shapes}") from None
    out = jnp.ones(shape, dtype=bool)
    for m in present:
        out = out & m
    return out


def to_torch_mha_mask(mask):
    """Ours (True = may attend) -> nn.MultiheadAttention's (True = blocked)."""
    check_min_ndim("mask", mask, 1)
    if mask.dtype != jnp.bool_:
        raise InputError(f"mask: expected dtype bool (True = may attend), got dtype {mask.dtype}")
    return ~mask


def from_torch_mha_mask(mask):
    """nn.MultiheadAttention's (True = blocked) -> ours (True = may attend)."""
    check_min_ndim("mask", mask, 1)
    if mask.dtype != jnp.bool_:
        raise InputError(f"mask: expected dtype bool (True = blocked), got dtype {mask.dtype}")
    return ~mask


@partial(jax.jit, static_argnames=("t_q", "t_k", "window"))
def _sliding_window(t_q, t_k, window, offset):
    p = jnp.arange(t_q)[:, None] + offset  # traced offset: decoding steps reuse one compilation
    j = jnp.arange(t_k)[None, :]
    return (j <= p) & (j > p - window)


def make_sliding_window_mask(t_q: int, window: int, t_k: int | None = None, offset: int = 0):
    """Query at position p = i + offset may attend to key j when p - window < j <= p (Mistral).

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    check_positive_int("window", window)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    return _sliding_window(t_q, t_k, window, offset)


def _slope_exponents(n_heads: int) -> np.ndarray:
    """-8k/p for the p = largest power of two <= n heads, then -8k/2p for odd k (numpy_impl explains)."""
    p = 1 << (n_heads.bit_length() - 1)
    return np.concatenate([-8.0 * np.arange(1, p + 1) / p, -8.0 * np.arange(1, 2 * (n_heads - p) + 1, 2) / (2 * p)])


@partial(jax.jit, static_argnames=("n_heads", "dtype"))
def _slopes(n_heads, dtype):
    return (2.0 ** jnp.asarray(_slope_exponents(n_heads), dtype=jnp.float64)).astype(dtype)


def alibi_slopes(n_heads: int, dtype=jnp.float64):
    """ALiBi's per-head slopes 2^(-8k/n), with the interleaved extras for n not a power of two.

    Shapes: -> (H,)
    """
    check_positive_int("n_heads", n_heads)
    return _slopes(n_heads, jnp.dtype(dtype))


@partial(jax.jit, static_argnames=("n_heads", "t_q", "t_k", "dtype"))
def _alibi(n_heads, t_q, t_k, offset, dtype):
    distance = jnp.arange(t_k)[None, :] - (jnp.arange(t_q)[:, None] + offset)  # j - p
    return (_slopes(n_heads, jnp.float64)[:, None, None] * distance).astype(dtype)


def alibi_bias(n_heads: int, t_q: int, t_k: int | None = None, offset: int = 0, dtype=jnp.float64):
    """Head h adds -m_h * (p - j) to query position p = i + offset's score with key j (numpy_impl
    explains why Bloom's m_h * j gives the same weights).

    Shapes: -> (H, T_q, T_k)
    """
    check_positive_int("n_heads", n_heads)
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    return _alibi(n_heads, t_q, t_k, offset, jnp.dtype(dtype))
