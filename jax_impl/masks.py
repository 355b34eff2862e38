"""Attention masks in JAX (bool, True = may attend); mirrors numpy_impl/masks.py name for name."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from common.checks import InputError, check_min_ndim, check_ndim, check_positive_int

__all__ = [
    "make_causal_mask",
    "make_key_padding_mask",
    "padding_to_attention_mask",
    "combine_masks",
    "to_torch_mha_mask",
    "from_torch_mha_mask",
]


def make_causal_mask(t_q: int, t_k: int | None = None, offset: int = 0):
    """Query i may attend to key j when j <= i + offset (offset = t_k - t_q for a KV cache).

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise InputError(f"offset: expected an integer, got {offset!r}")
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
