"""Attention masks. One convention in the whole project: bool, True = this query MAY attend to this key.

torch's nn.MultiheadAttention uses the opposite (True = blocked); to_torch_mha_mask and
from_torch_mha_mask convert at the boundary. F.scaled_dot_product_attention uses ours.
"""
from __future__ import annotations

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


def make_causal_mask(t_q: int, t_k: int | None = None, offset: int = 0) -> np.ndarray:
    """Query i may attend to key j when j <= i + offset.

    offset = 0 aligns the first query with the first key (torch's is_causal convention, also
    for T_q != T_k). With a KV cache the T_q new queries sit at the END of the T_k keys:
    use offset = t_k - t_q.

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise InputError(f"offset: expected an integer, got {offset!r}")
    i = np.arange(t_q)[:, None]
    j = np.arange(t_k)[None, :]
    return j <= i + offset


def make_key_padding_mask(lengths, t_k: int) -> np.ndarray:
    """Sequence b has lengths[b] real tokens followed by padding: keys j < lengths[b] are valid.

    Shapes: lengths (B,) ints -> (B, T_k) bool
    """
    lengths = np.asarray(lengths)
    check_ndim("lengths", lengths, 1, "(B,)")
    check_positive_int("t_k", t_k)
    if not np.issubdtype(lengths.dtype, np.integer):
        raise InputError(f"lengths: expected integers, got dtype {lengths.dtype}")
    if lengths.size and (lengths.min() < 0 or lengths.max() > t_k):
        raise InputError(f"lengths: expected values in [0, t_k={t_k}], got {lengths.tolist()}")
    return np.arange(t_k)[None, :] < lengths[:, None]


def padding_to_attention_mask(key_padding: np.ndarray) -> np.ndarray:
    """Lift a per-key validity mask to an attention mask that broadcasts over heads and queries.

    Shapes: (B, T_k) bool -> (B, 1, 1, T_k) bool
    """
    check_ndim("key_padding", key_padding, 2, "(B, T_k)")
    return key_padding[:, None, None, :]


def combine_masks(*masks: np.ndarray | None) -> np.ndarray | None:
    """A pair may be attended only if every mask allows it (logical AND, with broadcasting).

    Shapes: each broadcastable to (..., T_q, T_k) -> their broadcast shape; None entries skipped
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    for i, m in enumerate(present):
        if np.asarray(m).dtype != np.bool_:
            raise InputError(f"masks[{i}]: expected dtype bool (True = may attend), got dtype {np.asarray(m).dtype}")
    try:
        return np.logical_and.reduce(np.broadcast_arrays(*present))
    except ValueError:
        shapes = ", ".join(str(tuple(m.shape)) for m in present)
        raise InputError(f"masks: expected mutually broadcastable shapes, got {shapes}") from None


def to_torch_mha_mask(mask: np.ndarray) -> np.ndarray:
    """Ours (True = may attend) -> nn.MultiheadAttention's attn_mask / key_padding_mask (True = blocked)."""
    check_min_ndim("mask", mask, 1)
    if mask.dtype != np.bool_:
        raise InputError(f"mask: expected dtype bool (True = may attend), got dtype {mask.dtype}")
    return ~mask


def from_torch_mha_mask(mask: np.ndarray) -> np.ndarray:
    """nn.MultiheadAttention's convention (True = blocked) -> ours (True = may attend)."""
    check_min_ndim("mask", mask, 1)
    if mask.dtype != np.bool_:
        raise InputError(f"mask: expected dtype bool (True = blocked), got dtype {mask.dtype}")
    return ~mask
