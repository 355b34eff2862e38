"""One Llama-style decoder layer in JAX: numpy_impl/llama_block.py's maths (read it), written with
jax_impl's pieces (rms_norm, apply_rope, grouped_query_attention, swiglu_mlp), as jax_impl/llama.py
writes each of its layers; differentiated by JAX.

    rope_self_attention   merge(softmax(rope(x W_q^T) rope(x W_k^T)^T / sqrt(D), causal) x W_v^T) W_o^T
    llama_block           x + attn(rms_norm(x)), then + swiglu_mlp(rms_norm(x))
"""
from __future__ import annotations

import numpy as np

from triptych.common.llama_config import LAYER_ATTN_KEYS, LAYER_KEYS, check_layer_inputs
from jax_impl.gqa import grouped_query_attention
from jax_impl.masks import make_causal_mask
from jax_impl.multihead import linear, merge_heads, split_heads
from jax_impl.norms import rms_norm
from jax_impl.swiglu import swiglu_mlp
from jax_impl.positional import apply_rope

__all__ = ["rope_self_attention", "llama_block"]

ATTN_KEYS, BLOCK_KEYS = LAYER_ATTN_KEYS, LAYER_KEYS


def rope_self_attention(x, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved"):
    """Causal multi-head self-attention, RoPE on queries and keys. Shapes: x (B, T, C),
    positions (T,) or (B, T) (default 0..T-1) -> (B, T, C)"""
    check_layer_inputs(x, params, ATTN_KEYS)
    T = x.shape[1]
    positions = np.arange(T) if positions is None else positions
    rope = dict(positions=positions, base=base, layout=layout)
    q = apply_rope(split_heads(linear(x, params["w_q"]), n_heads), **rope)
    k = apply_rope(split_heads(linear(x, params["w_k"]), n_heads), **rope)
    v = split_heads(linear(x, params["w_v"]), n_heads)
    a, _ = grouped_query_attention(q, k, v, make_causal_mask(T))
    return linear(merge_heads(a), params["w_o"])


def llama_block(x, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                layout: str = "interleaved", eps: float = 1e-5):
    """Pre-norm decoder layer. Shapes: x (B, T, C), positions (T,) or (B, T) -> (B, T, C)"""
    check_layer_inputs(x, params, BLOCK_KEYS)
    attn = {k: params[f"attn.{k}"] for k in ATTN_KEYS}
    x = x + rope_self_attention(rms_norm(x, params["attn_norm.weight"], eps), attn, n_heads, positions, base, layout)
    mlp = {k: params[f"mlp.{k}"] for k in ("w_gate", "w_up", "w_down")}
    return x + swiglu_mlp(rms_norm(x, params["mlp_norm.weight"], eps), mlp)
