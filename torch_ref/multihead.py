"""The referee for multi-head attention: nn.MultiheadAttention / F.multi_head_attention_forward.

Two torch conventions are bridged here, not hidden: torch's MHA masks are True = BLOCKED (ours are
True = may attend) and a 3-D attn_mask is (B*H, T_q, T_k) indexed b*H + h; torch's MHA is
sequence-first unless batch_first=True. Fully masked query rows: torch's need_weights=True path
returns NaN weights and outputs, its need_weights=False path (SDPA) returns zeros. We take the
output from the SDPA path and the per-head weights from the weights path with NaN rows set to 0,
which is the project's convention (and what the weights mean: nothing was attended).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from triptych.common.checks import (
    check_heads,
    check_mask,
    check_ndim,
    check_same,
)
from triptych.common.params import MHA_KEYS, init_mha_params, mha_params_from_torch, mha_params_to_torch
from triptych.common.backend_checks import check_mha_params, check_sequence
from torch_ref._checks import all_finite_each
from torch_ref.attention import scaled_dot_product_attention
from torch_ref.masks import make_causal_mask

__all__ = [
    "linear",
    "split_heads",
    "merge_heads",
    "get_multihead_qkv",
    "calculate_multihead_attention",
    "multihead_attention",
    "self_attention",
    "MultiHeadAttention",
]


def _check_sequence(name: str, x, d_model: int | None = None) -> None:
    check_sequence(name, x, d_model, all_finite_each)


def _torch_mha_attn_mask(mask, B: int, H: int, T_q: int, T_k: int):
    """Our mask, broadcastable to (B, H, T_q, T_k) -> torch MHA's (B*H, T_q, T_k), True = blocked."""
    if mask is None:
        return None
    return (~mask).expand(B, H, T_q, T_k).reshape(B * H, T_q, T_k)


def linear(x, w, b=None):
    """Shapes: x (..., d_in), w (d_out, d_in), b (d_out,) -> (..., d_out)"""
    check_same("w", w.shape[-1], "x's last axis (d_in)", x.shape[-1], "input size")
    return F.linear(x, w, b)


def split_heads(x, n_heads: int):
    """Shapes: (B, T, C) -> (B, H, T, C/H)"""
    check_ndim("x", x, 3, "(B, T, C)")
    check_heads(x.shape[-1], n_heads)
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(x):
    """Shapes: (B, H, T, D) -> (B, T, H*D)"""
    check_ndim("x", x, 4, "(B, H, T, D)")
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)


def get_multihead_qkv(x, params: dict, n_heads: int, kv=None):
    """Shapes: x (B, T_q, C), kv (B, T_k, C) -> q (B, H, T_q, C/H), k, v (B, H, T_k, C/H)"""
    _check_sequence("x", x)
    d_model = x.shape[-1]
    check_heads(d_model, n_heads)
    check_mha_params(params, d_model)
    kv = x if kv is None else kv
    _check_sequence("kv", kv, d_model)
    q = split_heads(F.linear(x, params["w_q"], params["b_q"]), n_heads)
    k = split_heads(F.linear(kv, params["w_k"], params["b_k"]), n_heads)
    v = split_heads(F.linear(kv, params["w_v"], params["b_v"]), n_heads)
    return q, k, v


def calculate_multihead_attention(q, k, v, mask=None):
    """Shapes: q (B, H, T_q, D), k, v (B, H, T_k, D) -> out (B, H, T_q, D), weights (B, H, T_q, T_k)"""
    check_ndim("q", q, 4, "(B, H, T_q, D)")
    check_ndim("k", k, 4, "(B, H, T_k, D)")
    check_ndim("v", v, 4, "(B, H, T_k, D)")
    return scaled_dot_product_attention(q, k, v, mask=mask)


def multihead_attention(x, params: dict, n_heads: int, kv=None, mask=None):
    """F.multi_head_attention_forward with the packed in_proj built from our params.

    Shapes: x (B, T_q, C), kv (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, H, T_q, T_k)
    """
    _check_sequence("x", x)
    d_model = x.shape[-1]
    check_heads(d_model, n_heads)
    check_mha_params(params, d_model)
    kv = x if kv is None else kv
    _check_sequence("kv", kv, d_model)
    check_same("kv", kv.shape[0], "x's batch axis", x.shape[0], "batch size")
    B, T_q, T_k = x.shape[0], x.shape[1], kv.shape[1]
    if mask is not None:
        check_mask("mask", mask, (B, n_heads, T_q, T_k))
    sd = mha_params_to_torch(params) if not torch.is_tensor(params["w_q"]) else {
        "in_proj_weight": torch.cat([params["w_q"], params["w_k"], params["w_v"]]),
        "in_proj_bias": torch.cat([params["b_q"], params["b_k"], params["b_v"]]),
        "out_proj.weight": params["w_o"], "out_proj.bias": params["b_o"],
    }
    attn_mask = _torch_mha_attn_mask(mask, B, n_heads, T_q, T_k)

    def run(need_weights: bool):
        return F.multi_head_attention_forward(
            x.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1),  # torch MHA is (T, B, C)
            d_model, n_heads, sd["in_proj_weight"], sd["in_proj_bias"], None, None, False, 0.0,
            sd["out_proj.weight"], sd["out_proj.bias"], training=False, need_weights=need_weights,
            attn_mask=attn_mask, average_attn_weights=False,
        )

    out, _ = run(need_weights=False)
    _, weights = run(need_weights=True)
    return out.transpose(0, 1), torch.nan_to_num(weights, nan=0.0)


def self_attention(x, params: dict, n_heads: int, causal: bool = False):
    """Shapes: x (B, T, C) -> out (B, T, C), weights (B, H, T, T)"""
    _check_sequence("x", x)
    mask = make_causal_mask(x.shape[1]) if causal else None
    return multihead_attention(x, params, n_heads, mask=mask)


class MultiHeadAttention:
    """nn.MultiheadAttention(batch_first=True) behind the same interface as the NumPy/JAX classes.

    Shapes: query (B, T_q, C), key/value (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, T_q, T_k) averaged over heads or (B, H, T_q, T_k)
    """

    def __init__(self, d_model: int, n_heads: int, params: dict | None = None, seed: int = 0, dtype=torch.float64):
        check_heads(d_model, n_heads)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        if params is None:
            params = init_mha_params(d_model, seed, dtype=str(dtype).replace("torch.", ""))
        check_mha_params(params, d_model)
        sd = mha_params_to_torch({k: params[k] for k in MHA_KEYS})
        # The weights' dtype decides the module's, as in the NumPy and JAX classes.
        self.module = nn.MultiheadAttention(d_model, n_heads, bias=True, batch_first=True,
                                            dtype=sd["in_proj_weight"].dtype).eval()
        self.module.load_state_dict(sd)

    @classmethod
    def from_torch(cls, module: nn.MultiheadAttention) -> "MultiHeadAttention":
        return cls(module.embed_dim, module.num_heads, params=mha_params_from_torch(module.state_dict()),
                   dtype=module.in_proj_weight.dtype)

    def load_state_dict(self, state_dict) -> None:
        self.module.load_state_dict(state_dict)

    def state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    @property
    def params(self) -> dict:
        return {k: torch.as_tensor(v) for k, v in mha_params_from_torch(self.module.state_dict()).items()}

    def __call__(self, query, key=None, value=None, mask=None, need_weights: bool = True,
                 average_attn_weights: bool = True):
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            _check_sequence(name, t, self.d_model)
        check_same("value", value.shape[1], "key's sequence axis (T_k)", key.shape[1], "sequence length")
        B, T_q, T_k = query.shape[0], query.shape[1], key.shape[1]
        if mask is not None:
            check_mask("mask", mask, (B, self.n_heads, T_q, T_k))
        attn_mask = _torch_mha_attn_mask(mask, B, self.n_heads, T_q, T_k)
        # Not under torch.no_grad(): there the module takes its fused "fast path", which returns NaN
        # for fully masked rows; with autograd on it runs F.multi_head_attention_forward (SDPA).
        out, _ = self.module(query, key, value, attn_mask=attn_mask, need_weights=False)
        out = out.detach()
        if not need_weights:
            return out, None
        _, weights = self.module(query, key, value, attn_mask=attn_mask, need_weights=True,
                                 average_attn_weights=False)
        weights = torch.nan_to_num(weights.detach(), nan=0.0)  # see the module docstring
        return out, (weights.mean(dim=1) if average_attn_weights else weights)
