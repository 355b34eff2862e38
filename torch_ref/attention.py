"""The referee for scaled dot-product attention: torch's own kernels wherever torch has one.

The output comes from F.scaled_dot_product_attention (bool attn_mask: True = takes part, our
convention; fully masked rows give zeros). SDPA does not return its weights, so they are read out
of the same kernel by attending over an identity matrix: weights @ I = weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from triptych.common.checks import InputError, check_choice, check_finite, check_mask
from triptych.common.backend_checks import check_bias, check_qkv
from torch_ref._checks import all_finite, all_finite_each

__all__ = [
    "pairwise_similarities",
    "attn_scaled",
    "softmax",
    "apply_mask",
    "attn_softmax",
    "compute_outputs",
    "scaled_dot_product_attention",
    "wrong_zero_after_softmax",
]


def _check_qkv(q, k, v=None, values: bool = True) -> None:
    """common/backend_checks.check_qkv with this backend's value reader (values=False: a caller
    that leaves NaN/inf to flash.fast_attention)."""
    check_qkv(q, k, v, all_finite_each if values else None)


def pairwise_similarities(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Shapes: q (..., T_q, D), k (..., T_k, D) -> (..., T_q, T_k)"""
    _check_qkv(q, k)
    return torch.matmul(q, k.transpose(-2, -1))


def attn_scaled(scores: torch.Tensor, scale: float) -> torch.Tensor:
    """Shapes: (..., T_q, T_k) -> (..., T_q, T_k)"""
    return scores * scale


def softmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """Shapes: any -> same"""
    check_finite("x", all_finite(x))
    return torch.softmax(x, dim=axis)


def apply_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Shapes: scores (..., T_q, T_k), mask broadcastable (bool, True = may attend) -> same"""
    if mask is None:
        return scores
    check_mask("mask", mask, scores.shape)
    return scores.masked_fill(~mask, float("-inf"))


def attn_softmax(scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """torch's own "safe softmax" (the one SDPA's math path uses): all -inf rows give zeros.

    Shapes: scores (..., T_q, T_k), mask broadcastable (bool) -> weights (..., T_q, T_k)
    """
    return torch._safe_softmax(apply_mask(scores, mask), -1)


def compute_outputs(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Shapes: weights (..., T_q, T_k), v (..., T_k, D_v) -> (..., T_q, D_v)"""
    return torch.matmul(weights, v)


def scaled_dot_product_attention(q, k, v, mask=None, scale: float | None = None, kernel: str = "steps", bias=None):
    """F.scaled_dot_product_attention whichever `kernel` is asked for: torch's own fused kernel is
    the referee for both of ours (the argument exists so one call runs in all three backends).

    An additive `bias` goes in as SDPA's float attn_mask; SDPA takes one attn_mask, so a bool mask
    joins it as -inf where it forbids (torch's math path then still gives zeros on empty rows).

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k), bias broadcastable to (..., T_q, T_k)
            -> out (..., T_q, D_v), weights (..., T_q, T_k)
    """
    check_choice("kernel", kernel, ("steps", "fast"))
    _check_qkv(q, k, v)
    if mask is not None:
        check_mask("mask", mask, tuple(q.shape[:-1]) + (k.shape[-2],))
    if bias is not None:
        check_bias(bias, tuple(q.shape[:-1]) + (k.shape[-2],), all_finite_each)
        bias = bias.to(q.dtype)
        mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    t_k = k.shape[-2]
    eye = torch.eye(t_k, dtype=v.dtype, device=v.device).expand(*k.shape[:-2], t_k, t_k)
    weights = F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)
    return out, weights


def wrong_zero_after_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """THE WRONG WAY (see numpy_impl): softmax over all keys, then zero the forbidden weights.

    Shapes: scores (..., T_q, T_k), mask broadcastable (bool) -> weights (..., T_q, T_k)
    """
    if mask is None:
        raise InputError("mask: expected a bool mask (True = may attend), got None")
    check_mask("mask", mask, scores.shape)
    return torch.softmax(scores, dim=-1) * mask
