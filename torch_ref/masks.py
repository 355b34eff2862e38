"""Attention masks as torch tensors (bool, True = may attend), plus the adapters to
nn.MultiheadAttention's opposite convention (True = blocked).

The sliding window is Hugging Face's own mask function (transformers.masking_utils, the one
Mistral's and Gemma's masks are built from), evaluated on position grids. ALiBi follows Bloom's
_get_alibi_slopes algorithm, but in float64: Bloom builds its bases in float32, so 2^(-1/2) (the
base of 16 heads, or of 12 heads' extras) is rounded; parity_tests/test_decoder_masks.py compares
the two, and the attention weights Bloom's own build_alibi_tensor gives.
"""
from __future__ import annotations

import numpy as np
import torch
from transformers.masking_utils import sliding_window_causal_mask_function

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


def make_causal_mask(t_q: int, t_k: int | None = None, offset: int = 0) -> torch.Tensor:
    """torch.tril with diagonal=offset: the same mask SDPA's is_causal builds when offset = 0.

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    return torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=int(offset))


def make_key_padding_mask(lengths, t_k: int) -> torch.Tensor:
    """Shapes: lengths (B,) ints -> (B, T_k) bool, True for the first lengths[b] keys"""
    lengths = torch.as_tensor(np.asarray(lengths))
    check_ndim("lengths", lengths, 1, "(B,)")
    check_positive_int("t_k", t_k)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise InputError(f"lengths: expected integers, got dtype {str(lengths.dtype).replace('torch.', '')}")
    if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > t_k):
        raise InputError(f"lengths: expected values in [0, t_k={t_k}], got {lengths.tolist()}")
    return torch.arange(t_k)[None, :] < lengths[:, None]


def padding_to_attention_mask(key_padding: torch.Tensor) -> torch.Tensor:
    """Shapes: (B, T_k) bool -> (B, 1, 1, T_k) bool"""
    check_ndim("key_padding", key_padding, 2, "(B, T_k)")
    return key_padding[:, None, None, :]


def combine_masks(*masks):
    """Logical AND with broadcasting; None entries skipped."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    for i, m in enumerate(present):
        if m.dtype != torch.bool:
            raise InputError(f"masks[{i}]: expected dtype bool (True = may attend), got dtype {str(m.dtype).replace('torch.', '')}")
    try:
        present = torch.broadcast_tensors(*present)
    except RuntimeError:
        shapes = ", ".join(str(tuple(m.shape)) for m in present)
        raise InputError(f"masks: expected mutually broadcastable shapes, got {shapes}") from None
    out = present[0].clone()
    for m in present[1:]:
        out &= m
    return out


def to_torch_mha_mask(mask: torch.Tensor) -> torch.Tensor:
    """Ours (True = may attend) -> nn.MultiheadAttention's attn_mask / key_padding_mask (True = blocked)."""
    check_min_ndim("mask", mask, 1)
    if mask.dtype != torch.bool:
        raise InputError(f"mask: expected dtype bool (True = may attend), got dtype {str(mask.dtype).replace('torch.', '')}")
    return ~mask


def from_torch_mha_mask(mask: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention's (True = blocked) -> ours (True = may attend)."""
    check_min_ndim("mask", mask, 1)
    if mask.dtype != torch.bool:
        raise InputError(f"mask: expected dtype bool (True = blocked), got dtype {str(mask.dtype).replace('torch.', '')}")
    return ~mask


def make_sliding_window_mask(t_q: int, window: int, t_k: int | None = None, offset: int = 0) -> torch.Tensor:
    """HF's sliding_window_causal_mask_function(window) at q_idx = i + offset, kv_idx = j:
    kv_idx <= q_idx and kv_idx > q_idx - window.

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    check_positive_int("window", window)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    q_idx = torch.arange(t_q)[:, None] + int(offset)
    kv_idx = torch.arange(t_k)[None, :]
    allowed = sliding_window_causal_mask_function(int(window))(0, 0, q_idx, kv_idx)
    return allowed.expand(t_q, t_k).clone()


def alibi_slopes(n_heads: int, dtype=torch.float64) -> torch.Tensor:
    """Bloom's slopes in float64: base 2^(-8/p) to the powers 1..p, then base 2^(-8/2p) to the odd
    powers 1, 3, ... for the n - p heads beyond the largest power of two p.

    Shapes: -> (H,)
    """
    check_positive_int("n_heads", n_heads)
    p = 1 << (n_heads.bit_length() - 1)
    base = torch.tensor(2.0 ** (-8.0 / p), dtype=torch.float64)
    slopes = base ** torch.arange(1, p + 1, dtype=torch.float64)
    extra_base = torch.tensor(2.0 ** (-8.0 / (2 * p)), dtype=torch.float64)
    extra = extra_base ** torch.arange(1, 2 * (n_heads - p) + 1, 2, dtype=torch.float64)
    return torch.cat([slopes, extra]).to(dtype)


def alibi_bias(n_heads: int, t_q: int, t_k: int | None = None, offset: int = 0, dtype=torch.float64) -> torch.Tensor:
    """slope_h * (j - p) for query position p = i + offset and key j: Bloom's slope_h * j, made
    the paper's by the per-row constant -slope_h * p.

    Shapes: -> (H, T_q, T_k)
    """
    check_positive_int("n_heads", n_heads)
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    check_offset(offset)
    slopes = alibi_slopes(n_heads)[:, None, None]
    key_term = slopes * torch.arange(t_k, dtype=torch.float64)[None, None, :]  # Bloom's bias
    row_term = slopes * (torch.arange(t_q, dtype=torch.float64)[None, :, None] + int(offset))
    return (key_term - row_term).to(dtype)
