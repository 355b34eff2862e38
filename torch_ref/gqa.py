"""The referee for grouped-query attention: Hugging Face Llama's own repeat_kv, and torch SDPA with
enable_gqa=True (which shares the KV heads inside the kernel, never repeating them in memory).

Weights are read out of the same kernel as in torch_ref/attention.py: attending over an identity
matrix returns the weights. The identity has H_kv heads, so enable_gqa shares it too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import repeat_kv as _hf_repeat_kv

from triptych.common.checks import check_broadcastable, check_choice, check_finite, check_float, check_mask, check_ndim, check_positive_int
from triptych.common.backend_checks import check_groups
from torch_ref._checks import all_finite
from torch_ref.attention import _check_qkv

__all__ = ["repeat_kv", "grouped_query_attention"]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """HF Llama's repeat_kv. Shapes: (B, H_kv, T, D) -> (B, H_kv * n_rep, T, D)"""
    check_ndim("x", x, 4, "(B, H_kv, T, D)")
    check_positive_int("n_rep", n_rep)
    return _hf_repeat_kv(x, n_rep)


def grouped_query_attention(q, k, v, mask=None, scale: float | None = None, kernel: str = "steps", bias=None):
    """F.scaled_dot_product_attention(..., enable_gqa=True); `kernel` is accepted so one call runs in
    all three backends, and a bias joins the bool mask as one float attn_mask (-inf where forbidden).

    Shapes: q (B, H, T_q, D), k (B, H_kv, T_k, D), v (B, H_kv, T_k, D_v), mask (bool) and bias
            broadcastable to (B, H, T_q, T_k) -> out (B, H, T_q, D_v), weights (B, H, T_q, T_k)
    """
    check_choice("kernel", kernel, ("steps", "fast"))
    check_groups(q, k, v)
    _check_qkv(q, k, v)
    scores_shape = tuple(q.shape[:-1]) + (k.shape[-2],)
    if mask is not None:
        check_mask("mask", mask, scores_shape)
    if bias is not None:
        check_float("bias", bias)
        check_broadcastable("bias", bias, scores_shape, "(an additive score bias)")
        check_finite("bias", all_finite(bias))
        bias = bias.to(q.dtype)
        mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)
    t_k = k.shape[-2]
    eye = torch.eye(t_k, dtype=v.dtype, device=v.device).expand(*k.shape[:-2], t_k, t_k)
    weights = F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale, enable_gqa=True)
    return out, weights
