"""One Llama-style decoder layer, torch side: the referee for numpy_impl/llama_block.py (read it for
the maths). Attention is torch's F.scaled_dot_product_attention(is_causal=True), RoPE torch_ref's
apply_rope (the complex rotation for "interleaved", Hugging Face's apply_rotary_pos_emb for "half"),
RMSNorm F.rms_norm, the MLP Hugging Face's LlamaMLP (torch_ref.swiglu).

    rope_self_attention   merge(sdpa(rope(x W_q^T), rope(x W_k^T), x W_v^T, causal)) W_o^T
    llama_block           x + attn(rms_norm(x)), then + swiglu_mlp(rms_norm(x))
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from triptych.common.checks import InputError
from triptych.common.llama_config import LAYER_ATTN_KEYS, LAYER_KEYS, check_layer_inputs
from torch_ref.norms import rms_norm
from torch_ref.positional import apply_rope
from torch_ref.swiglu import swiglu_mlp

__all__ = ["rope_self_attention", "llama_block"]

ATTN_KEYS, BLOCK_KEYS = LAYER_ATTN_KEYS, LAYER_KEYS


def _heads(y: torch.Tensor, n: int) -> torch.Tensor:
    B, T, C = y.shape
    if C % n:
        raise InputError(f"n_heads: expected a divisor of d_model={C}, got {n}")
    return y.view(B, T, n, C // n).transpose(1, 2)  # (B, n, T, D)


def rope_self_attention(x: torch.Tensor, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved") -> torch.Tensor:
    """Causal multi-head self-attention, RoPE on queries and keys. Shapes: x (B, T, C),
    positions (T,) or (B, T) (default 0..T-1) -> (B, T, C)"""
    check_layer_inputs(x, params, ATTN_KEYS)
    if isinstance(positions, torch.Tensor):
        positions = positions.numpy()
    rope = dict(positions=positions, base=float(base), layout=layout)
    q = apply_rope(_heads(F.linear(x, params["w_q"]), n_heads), **rope)
    k = apply_rope(_heads(F.linear(x, params["w_k"]), n_heads), **rope)
    v = _heads(F.linear(x, params["w_v"]), n_heads)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(a.transpose(1, 2).flatten(2), params["w_o"])


def llama_block(x: torch.Tensor, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                layout: str = "interleaved", eps: float = 1e-5) -> torch.Tensor:
    """Pre-norm decoder layer. Shapes: x (B, T, C), positions (T,) or (B, T) -> (B, T, C)"""
    check_layer_inputs(x, params, BLOCK_KEYS)
    attn = {k: params[f"attn.{k}"] for k in ATTN_KEYS}
    x = x + rope_self_attention(rms_norm(x, params["attn_norm.weight"], eps), attn, n_heads, positions, base, layout)
    mlp = {k: params[f"mlp.{k}"] for k in ("w_gate", "w_up", "w_down")}
    return x + swiglu_mlp(rms_norm(x, params["mlp_norm.weight"], eps), mlp)
