"""One layer of the Llama-style decoder on its own: causal self-attention with RoPE, and the pre-norm
block around it. The same maths as numpy_impl/llama.py's layers (whose forward and backward these
call), addressed by one layer's weights rather than a whole model's, for code written a layer at a
time (Stanford CS336's TransformerBlock, Meta's original Llama `Attention` and `TransformerBlock`).

    rope_self_attention   out = merge(softmax(rope(q) rope(k)^T / sqrt(D), causal) v) W_o^T
                          q, k, v = x W_q^T, x W_k^T, x W_v^T split into n_heads heads of D
    llama_block           x = x + rope_self_attention(rms_norm(x, attn_norm))
                          x = x + swiglu_mlp(rms_norm(x, mlp_norm))

`layout` pairs RoPE's channels: "interleaved" (2i, 2i+1; RoFormer, Meta's code, CS336) by default
here, "half" (i, i + D/2; Hugging Face). Positions default to 0..T-1; (B, T) positions give each
sequence its own (packed sequences, a cache at different offsets).

Weights, linear ones (d_out, d_in) applied as x @ W.T, no biases:
    rope_self_attention   w_q, w_k, w_v (C, C), w_o (C, C)
    llama_block           attn_norm.weight (C,), attn.w_q ... attn.w_o, mlp_norm.weight (C,),
                          mlp.w_gate, mlp.w_up (d_ff, C), mlp.w_down (C, d_ff)
"""
from __future__ import annotations

import numpy as np

from triptych.common.llama_config import LAYER_ATTN_KEYS, LAYER_KEYS, LlamaConfig, check_layer_inputs
from numpy_impl import llama
from numpy_impl.masks import make_causal_mask

__all__ = ["rope_self_attention", "llama_block"]
# The (out, cache) forwards exist for the hand-written backward; JAX and torch differentiate automatically.
__backend_only__ = ["rope_self_attention_forward", "llama_block_forward"]

ATTN_KEYS, BLOCK_KEYS = LAYER_ATTN_KEYS, LAYER_KEYS


def _config(x, params: dict, keys, n_heads: int, base: float, layout: str, eps: float, d_ff: int = 1) -> LlamaConfig:
    """The one-layer LlamaConfig these weights describe (every head its own keys: n_kv_heads = n_heads)."""
    check_layer_inputs(x, params, keys)
    return LlamaConfig(vocab_size=1, block_size=max(int(x.shape[1]), 1), d_model=int(x.shape[-1]), n_layers=1,
                       n_heads=n_heads, n_kv_heads=n_heads, d_ff=d_ff, rope_base=base, rope_layout=layout,
                       norm_eps=eps, tie_embeddings=True)


def _positions(x, positions) -> np.ndarray:
    return np.arange(x.shape[1]) if positions is None else np.asarray(positions)


def rope_self_attention_forward(x: np.ndarray, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                                layout: str = "interleaved"):
    """Shapes: x (B, T, C), positions (T,) or (B, T) -> out (B, T, C), cache"""
    config = _config(x, params, ATTN_KEYS, n_heads, base, layout, 1e-5)
    out, cache = llama.attention_forward(x, params, config, _positions(x, positions), make_causal_mask(x.shape[1]))
    return out, (cache, config)


def rope_self_attention_backward(dout: np.ndarray, cache):
    """Shapes: dout (B, T, C) -> dx (B, T, C), grads {w_q, w_k, w_v, w_o}"""
    inner, config = cache
    return llama.attention_backward(dout, inner, config)


def rope_self_attention(x: np.ndarray, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved") -> np.ndarray:
    """Causal multi-head self-attention, RoPE on queries and keys. Shapes: x (B, T, C) -> (B, T, C)"""
    return rope_self_attention_forward(x, params, n_heads, positions, base, layout)[0]


def llama_block_forward(x: np.ndarray, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved", eps: float = 1e-5):
    """Shapes: x (B, T, C) -> out (B, T, C), cache"""
    d_ff = int(params["mlp.w_gate"].shape[0]) if isinstance(params, dict) and "mlp.w_gate" in params else 1
    config = _config(x, params, BLOCK_KEYS, n_heads, base, layout, eps, d_ff)
    layer = {f"layers.0.{k}": v for k, v in params.items()}
    out, cache = llama.block_forward(x, layer, 0, config, _positions(x, positions), make_causal_mask(x.shape[1]))
    return out, (cache, config)


def llama_block_backward(dout: np.ndarray, cache):
    """Shapes: dout (B, T, C) -> dx (B, T, C), grads {BLOCK_KEYS}"""
    inner, config = cache
    grads: dict = {}
    dx = llama.block_backward(dout, inner, 0, config, grads)
    return dx, {k[len("layers.0."):]: g for k, g in grads.items()}


def llama_block(x: np.ndarray, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                layout: str = "interleaved", eps: float = 1e-5) -> np.ndarray:
    """Pre-norm decoder layer: RMSNorm -> RoPE attention -> residual, RMSNorm -> SwiGLU -> residual.

    Shapes: x (B, T, C), positions (T,) or (B, T) -> (B, T, C)
    """
    return llama_block_forward(x, params, n_heads, positions, base, layout, eps)[0]
