"""Attention masks. One convention in the whole project: bool, True = this query MAY attend to this key.

torch's nn.MultiheadAttention uses the opposite (True = blocked); to_torch_mha_mask and
from_torch_mha_mask convert at the boundary. F.scaled_dot_product_attention uses ours.

Positions: query i of T_q sits at absolute position i + offset, key j at position j. offset = 0
aligns the first query with the first key (torch's is_causal); a KV cache's new queries sit after
the cached keys, offset = t_k - t_q. The causal, sliding-window and ALiBi builders all read it so.

ALiBi is not a mask but an additive score bias (float, per head), for attention's `bias=` argument;
it lives here because, like the masks, it depends only on positions.
"""
from __future__ import annotations

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
    check_offset(offset)
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


def make_sliding_window_mask(t_q: int, window: int, t_k: int | None = None, offset: int = 0) -> np.ndarray:
    """Causal attention over the last `window` keys only (Mistral): query i, at position p = i + offset,
    may attend to key j when p - window < j <= p, so at most `window` keys, itself included.
    window >= t_k gives back make_causal_mask.

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    check_positive_int("window", window)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    p = np.arange(t_q)[:, None] + offset  # the queries' absolute positions
    j = np.arange(t_k)[None, :]
    return (j <= p) & (j > p - window)


def alibi_slopes(n_heads: int, dtype=np.float64) -> np.ndarray:
    """ALiBi's per-head slopes (Press et al. 2022, section 3). For n heads, n a power of two, the
    geometric sequence m_k = 2^(-8k/n), k = 1..n (8 heads: 1/2, 1/4, ..., 1/256). Otherwise, with p
    the largest power of two below n: the p slopes of p heads, then every other slope of 2p heads
    (2^(-8k/2p) for k = 1, 3, 5, ...) until there are n, which the authors found to work as well.

    Shapes: -> (H,)
    """
    check_positive_int("n_heads", n_heads)
    p = 1 << (n_heads.bit_length() - 1)  # largest power of two <= n_heads, exact (no float log2)
    slopes = 2.0 ** (-8.0 * np.arange(1, p + 1) / p)
    extra = 2.0 ** (-8.0 * np.arange(1, 2 * (n_heads - p) + 1, 2) / (2 * p))  # odd k of 2p heads
    return np.concatenate([slopes, extra]).astype(dtype)


def alibi_bias(n_heads: int, t_q: int, t_k: int | None = None, offset: int = 0, dtype=np.float64) -> np.ndarray:
    """The ALiBi score bias: head h adds -m_h * (p - j) to the score of query position p = i + offset
    with key j, a penalty growing linearly with distance. Use it with a causal mask; the same line
    continues (positive) for j > p, where the mask hides it.

    Hugging Face Bloom adds m_h * j instead: that differs by -m_h * p, a constant along each query's
    row, and softmax ignores such a constant, so the attention weights are the same.

    Shapes: -> (H, T_q, T_k), broadcasting over batch as attention's `bias`
    """
    check_positive_int("n_heads", n_heads)
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    distance = np.arange(t_k)[None, :] - (np.arange(t_q)[:, None] + offset)  # j - p, <= 0 where causal
    return (alibi_slopes(n_heads, np.float64)[:, None, None] * distance).astype(dtype)
