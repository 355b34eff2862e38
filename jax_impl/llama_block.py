"""One Llama-style decoder layer in JAX: numpy_impl/llama_block.py's maths and names (read it), written
with jax_impl's pieces (rms_norm, apply_rope, grouped_query_attention, swiglu_mlp); differentiated by
JAX. The ONE place the layer is wired here: jax_impl/llama.py (full forward, KV-cache decoding),
jax_impl/llama_decode.py (the fixed-size cache, inside lax.scan) and triptych/pretrained/trace.py
all run llama_layer and read its activations by name. Under jax.jit the activations nobody reads
(the attention weights, gate and up) are dropped by XLA, so keeping them costs the jitted callers
nothing.

    llama_layer           x + attn(rms_norm(x)), then + swiglu_mlp(rms_norm(x)); attend pluggable
    rope_self_attention   merge(softmax(rope(x W_q^T) rope(x W_k^T)^T / sqrt(D), causal) x W_v^T) W_o^T
    llama_block           llama_layer addressed by sizes (CS336's TransformerBlock)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from triptych.common.llama_config import LAYER_ATTN_KEYS, LAYER_KEYS, LlamaConfig, check_layer_inputs
from jax_impl import swiglu
from jax_impl.gqa import grouped_query_attention
from jax_impl.masks import make_causal_mask
from jax_impl.multihead import linear, merge_heads, split_heads
from jax_impl.norms import rms_norm
from jax_impl.positional import apply_rope

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
    weights: Any  # (B, H, T, S) softmax probabilities, None when the attend does not form them
    kv: Any  # the KV cache after this call, None without one
    attention: Any  # (B, T, H*D) merged heads, o_proj's input
    o_proj: Any  # (B, T, C)


class LlamaLayerCache(NamedTuple):
    """One layer's activations (a pytree: jit and lax.scan carry it like a tuple)."""
    x: Any  # (B, T, C) the layer's input
    attn_norm: Any  # (B, T, C)
    attn: AttentionCache
    resid_attn: Any  # (B, T, C) x + o_proj
    mlp_norm: Any  # (B, T, C)
    gate: Any  # (B, T, d_ff) mlp_norm W_gate^T, before SiLU (beside swiglu_mlp, the same product)
    up: Any  # (B, T, d_ff)
    mlp: Any  # (B, T, C) swiglu_mlp(mlp_norm)
    out: Any  # (B, T, C) resid_attn + mlp


def causal_attend(q, k, v):
    """Query t sees keys 0..t. Shapes: q (B, H, T, D), k, v (B, H_kv, T, D) -> a, weights (B, H, T, T), None"""
    a, weights = grouped_query_attention(q, k, v, make_causal_mask(q.shape[2]))
    return a, weights, None


def attention_forward(h, p: dict, config: LlamaConfig, positions, attend: Callable = causal_attend):
    """Shapes: h (B, T, C), positions (T,) or (B, T) -> out (B, T, C), AttentionCache"""
    q = split_heads(linear(h, p["w_q"]), config.n_heads)
    k = split_heads(linear(h, p["w_k"]), config.n_kv_heads)
    v = split_heads(linear(h, p["w_v"]), config.n_kv_heads)
    rope = dict(positions=positions, base=config.rope_base, layout=config.rope_layout)
    q_rope, k_rope = apply_rope(q, **rope), apply_rope(k, **rope)
    a, weights, kv = attend(q_rope, k_rope, v)
    attention = merge_heads(a)
    o_proj = linear(attention, p["w_o"])
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
    mlp_p = _part(p, "mlp")
    gate, up = linear(mlp_norm, mlp_p["w_gate"]), linear(mlp_norm, mlp_p["w_up"])  # read beside, not fed on
    mlp = swiglu.swiglu_mlp(mlp_norm, mlp_p)
    out = resid_attn + mlp
    return out, LlamaLayerCache(x, attn_norm, attn, resid_attn, mlp_norm, gate, up, mlp, out)


def _config(x, params: dict, keys, n_heads: int, base: float, layout: str, eps: float, d_ff: int = 1) -> LlamaConfig:
    """The one-layer LlamaConfig these weights describe (every head its own keys: n_kv_heads = n_heads)."""
    check_layer_inputs(x, params, keys)
    return LlamaConfig(vocab_size=1, block_size=max(int(x.shape[1]), 1), d_model=int(x.shape[-1]), n_layers=1,
                       n_heads=n_heads, n_kv_heads=n_heads, d_ff=d_ff, rope_base=base, rope_layout=layout,
                       norm_eps=eps, tie_embeddings=True)


def rope_self_attention(x, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved"):
    """Causal multi-head self-attention, RoPE on queries and keys. Shapes: x (B, T, C),
    positions (T,) or (B, T) (default 0..T-1) -> (B, T, C)"""
    config = _config(x, params, ATTN_KEYS, n_heads, base, layout, 1e-5)
    positions = np.arange(x.shape[1]) if positions is None else positions
    return attention_forward(x, params, config, positions)[0]


def llama_block(x, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                layout: str = "interleaved", eps: float = 1e-5):
    """Pre-norm decoder layer. Shapes: x (B, T, C), positions (T,) or (B, T) -> (B, T, C)"""
    d_ff = int(params["mlp.w_gate"].shape[0]) if isinstance(params, dict) and "mlp.w_gate" in params else 1
    config = _config(x, params, BLOCK_KEYS, n_heads, base, layout, eps, d_ff)
    positions = np.arange(x.shape[1]) if positions is None else positions
    return llama_layer(x, params, config, positions)[0]
