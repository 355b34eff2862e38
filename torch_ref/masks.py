"""Attention masks as torch tensors (bool, True = may attend), plus the adapters to
nn.MultiheadAttention's opposite convention (True = blocked)."""
from __future__ import annotations

import numpy as np
import torch

from common.checks import InputError, check_min_ndim, check_ndim, check_positive_int

__all__ = [
    "make_causal_mask",
    "make_key_padding_mask",
    "padding_to_attention_mask",
    "combine_masks",
    "to_torch_mha_mask",
    "from_torch_mha_mask",
]


def make_causal_mask(t_q: int, t_k: int | None = None, offset: int = 0) -> torch.Tensor:
    """torch.tril with diagonal=offset: the same mask SDPA's is_causal builds when offset = 0.

    Shapes: -> (T_q, T_k) bool
    """
    check_positive_int("t_q", t_q)
    t_k = t_q if t_k is None else t_k
    check_positive_int("t_k", t_k)
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)):
        raise InputError(f"offset: expected an integer, got {offset!r}")
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
