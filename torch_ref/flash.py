"""The referee for numpy_impl/flash.py and jax_impl/flash.py: torch's own attention kernels.

F.scaled_dot_product_attention is itself a fused, tiled (flash) kernel on CPU, and torch autograd
differentiates it, so the gradients of our tiled backward are checked against torch's. The
logsumexp that flash_attention also returns comes from torch.logsumexp over the masked, scaled
scores. block_q and block_k are accepted for the shared signature and ignored: torch picks its own
tiles, and the result does not depend on them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from triptych.common.checks import (
    check_mask,
)
from triptych.common.backend_checks import check_blocks, check_flash
from torch_ref._checks import all_finite_each

__all__ = ["fast_attention", "flash_attention"]


def _prepare(q, k, v, mask, causal):
    check_flash(q, k, v, causal, all_finite_each)
    t_q, t_k = q.shape[-2], k.shape[-2]
    if mask is not None:
        check_mask("mask", mask, tuple(q.shape[:-2]) + (t_q, t_k))
    if causal:
        # torch's is_causal convention (key j <= query i); SDPA refuses is_causal with attn_mask,
        # so the two are combined into one bool mask.
        tri = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril()
        mask = tri if mask is None else mask & tri
    return mask


def fast_attention(q, k, v, mask=None, scale: float | None = None, causal: bool = False, need_weights: bool = False):
    """F.scaled_dot_product_attention; with need_weights the weights too (read out of the same
    kernel by attending over an identity matrix, as torch_ref/attention.py does).

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k) -> out (..., T_q, D_v), weights (..., T_q, T_k) or None
    """
    mask = _prepare(q, k, v, mask, causal)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    if not need_weights:
        return out, None
    t_k = k.shape[-2]
    eye = torch.eye(t_k, dtype=v.dtype, device=v.device).expand(*k.shape[:-2], t_k, t_k)
    return out, F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)


def flash_attention(q, k, v, mask=None, scale: float | None = None, causal: bool = False,
                    block_q: int = 128, block_k: int = 256):
    """Output from F.scaled_dot_product_attention (differentiable), logsumexp of the scaled, masked
    scores from torch.logsumexp (-inf for a fully masked row).

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k) -> out (..., T_q, D_v), lse (..., T_q)
    """
    check_blocks(block_q, block_k)
    mask = _prepare(q, k, v, mask, causal)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    s = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return out, torch.logsumexp(s, dim=-1)
