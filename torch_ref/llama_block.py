"""One Llama-style decoder layer, torch side: the referee for numpy_impl/llama_block.py (read it for
the maths). Attention is torch's F.scaled_dot_product_attention(is_causal=True), RoPE torch_ref's
apply_rope (the complex rotation for "interleaved", Hugging Face's apply_rotary_pos_emb for "half"),
RMSNorm F.rms_norm, the MLP Hugging Face's LlamaMLP (torch_ref.swiglu).

    llama_layer           x + attn(rms_norm(x)), then + swiglu_mlp(rms_norm(x)); attend pluggable
    rope_self_attention   merge(sdpa(rope(x W_q^T), rope(x W_k^T), x W_v^T, causal)) W_o^T
    llama_block           llama_layer addressed by sizes (CS336's TransformerBlock)

llama_layer is the one place torch_ref/llama.py wires a layer (the full forward with causal SDPA,
KV-cache decoding with torch_ref.kvcache.cached_attention as its attend).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.llama_config import LAYER_ATTN_KEYS, LAYER_KEYS, LlamaConfig, check_layer_inputs
from torch_ref import swiglu
from torch_ref.norms import rms_norm
from torch_ref.positional import apply_rope

__all__ = ["rope_self_attention", "llama_block", "llama_layer"]
# The activations' types: NumPy's carry its backward's caches besides (numpy_impl/llama_block.py).
__backend_only__ = ["AttentionCache", "LlamaLayerCache"]

ATTN_KEYS, BLOCK_KEYS = LAYER_ATTN_KEYS, LAYER_KEYS


class AttentionCache(NamedTuple):
    """The attention half's activations, numpy_impl.llama_block.AttentionCache's names."""
    q: Any  # (B, H, T, D) before RoPE
    k: Any  # (B, H_kv, T, D)
    v: Any  # (B, H_kv, T, D) never rotated
    q_rope: Any  # (B, H, T, D)
    k_rope: Any  # (B, H_kv, T, D)
    weights: Any  # None: SDPA does not return its probabilities
    kv: Any  # the KV cache after this call, None without one
    attention: Any  # (B, T, H*D) merged heads, o_proj's input
    o_proj: Any  # (B, T, C)


class LlamaLayerCache(NamedTuple):
    """One layer's activations. gate and up are None: the MLP is Hugging Face's LlamaMLP whole (the
    referee's point), which keeps its products to itself; the tracer reads HF's by hooks."""
    x: Any  # (B, T, C) the layer's input
    attn_norm: Any  # (B, T, C)
    attn: AttentionCache
    resid_attn: Any  # (B, T, C) x + o_proj
    mlp_norm: Any  # (B, T, C)
    gate: Any  # None
    up: Any  # None
    mlp: Any  # (B, T, C) swiglu_mlp(mlp_norm)
    out: Any  # (B, T, C) resid_attn + mlp


def _heads(y: torch.Tensor, n: int) -> torch.Tensor:
    B, T, _ = y.shape
    return y.view(B, T, n, -1).transpose(1, 2)  # (B, n, T, D)


def causal_attend(q, k, v):
    """Query t sees keys 0..t: SDPA's is_causal, grouped-query by enable_gqa.
    Shapes: q (B, H, T, D), k, v (B, H_kv, T, D) -> a (B, H, T, D), None, None"""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), None, None


def attention_forward(h, p: dict, config: LlamaConfig, positions, attend: Callable = causal_attend):
    """Shapes: h (B, T, C), positions (T,) or (B, T) -> out (B, T, C), AttentionCache"""
    q = _heads(F.linear(h, p["w_q"]), config.n_heads)
    k = _heads(F.linear(h, p["w_k"]), config.n_kv_heads)
    v = _heads(F.linear(h, p["w_v"]), config.n_kv_heads)
    rope = dict(positions=positions, base=float(config.rope_base), layout=config.rope_layout)
    q_rope, k_rope = apply_rope(q, **rope), apply_rope(k, **rope)
    a, weights, kv = attend(q_rope, k_rope, v)
    attention = a.transpose(1, 2).flatten(2)  # (B, T, H*D)
    o_proj = F.linear(attention, p["w_o"])
    return o_proj, AttentionCache(q, k, v, q_rope, k_rope, weights, kv, attention, o_proj)


def _part(p: dict, part: str) -> dict:
    return {k[len(part) + 1:]: v for k, v in p.items() if k.startswith(part + ".")}


def llama_layer(x, p: dict, config: LlamaConfig, positions, attend: Callable = causal_attend):
    """One pre-norm decoder layer. p: the layer's LAYER_KEYS (no `layers.{i}.` prefix).

    Shapes: x (B, T, C), positions (T,) or (B, T) -> out (B, T, C), LlamaLayerCache
    """
    attn_norm = rms_norm(x, p["attn_norm.weight"], config.norm_eps)
    o_proj, attn = attention_forward(attn_norm, _part(p, "attn"), config, positions, attend)
    resid_attn = x + o_proj
    mlp_norm = rms_norm(resid_attn, p["mlp_norm.weight"], config.norm_eps)
    mlp = swiglu.swiglu_mlp(mlp_norm, _part(p, "mlp"))
    out = resid_attn + mlp
    return out, LlamaLayerCache(x, attn_norm, attn, resid_attn, mlp_norm, None, None, mlp, out)


def _config(x, params: dict, keys, n_heads: int, base: float, layout: str, eps: float, d_ff: int = 1) -> LlamaConfig:
    """The one-layer LlamaConfig these weights describe (every head its own keys: n_kv_heads = n_heads)."""
    check_layer_inputs(x, params, keys)
    return LlamaConfig(vocab_size=1, block_size=max(int(x.shape[1]), 1), d_model=int(x.shape[-1]), n_layers=1,
                       n_heads=n_heads, n_kv_heads=n_heads, d_ff=d_ff, rope_base=float(base), rope_layout=layout,
                       norm_eps=eps, tie_embeddings=True)


def _positions(x, positions):
    if positions is None:
        return np.arange(x.shape[1])
    return positions.numpy() if isinstance(positions, torch.Tensor) else positions


def rope_self_attention(x: torch.Tensor, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved") -> torch.Tensor:
    """Causal multi-head self-attention, RoPE on queries and keys. Shapes: x (B, T, C),
    positions (T,) or (B, T) (default 0..T-1) -> (B, T, C)"""
    config = _config(x, params, ATTN_KEYS, n_heads, base, layout, 1e-5)
    return attention_forward(x, params, config, _positions(x, positions))[0]


def llama_block(x: torch.Tensor, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                layout: str = "interleaved", eps: float = 1e-5) -> torch.Tensor:
    """Pre-norm decoder layer. Shapes: x (B, T, C), positions (T,) or (B, T) -> (B, T, C)"""
    d_ff = int(params["mlp.w_gate"].shape[0]) if isinstance(params, dict) and "mlp.w_gate" in params else 1
    config = _config(x, params, BLOCK_KEYS, n_heads, base, layout, eps, d_ff)
    return llama_layer(x, params, config, _positions(x, positions))[0]
