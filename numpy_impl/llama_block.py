"""One layer of the Llama-style decoder: the ONE place its wiring is written in NumPy. The full model
(numpy_impl/llama.py, forward, backward and KV-cache decoding), the fixed-cache decoder
(numpy_impl/llama_decode.py) and the tracer (triptych/pretrained/trace.py) all run llama_layer and
read its activations by name, as llm.c names the activations of its GPT-2 layer.

    llama_layer           attn_norm = rms_norm(x)
                          q, k, v = split_heads(attn_norm W^T)    H query heads, H_kv key/value heads
                          q_rope, k_rope = rope(q), rope(k)       at `positions`
                          attention = merge(attend(q_rope, k_rope, v))  causal GQA by default
                          resid_attn = x + attention W_o^T
                          out = resid_attn + swiglu_mlp(rms_norm(resid_attn))
    rope_self_attention   the attention half alone, every head its own keys (Stanford CS336's
                          multihead_self_attention_with_rope, Meta's original Llama `Attention`)
    llama_block           llama_layer addressed by sizes instead of a LlamaConfig (CS336's
                          TransformerBlock, Meta's `TransformerBlock`)

`attend(q_rope, k_rope, v) -> (a, weights, kv)` is the one thing that differs between the callers:
causal attention over the T positions given (weights kept for the backward), or attention over a
KV cache (kv: the cache after this call). `layout` pairs RoPE's channels: "interleaved" (2i, 2i+1;
RoFormer, Meta's code, CS336) by default in llama_block, "half" (i, i + D/2; Hugging Face).

Weights, linear ones (d_out, d_in) applied as x @ W.T, no biases (common.llama_config.LAYER_KEYS):
    attn_norm.weight (C,), attn.w_q (H*D, C), attn.w_k, attn.w_v (H_kv*D, C), attn.w_o (C, H*D),
    mlp_norm.weight (C,), mlp.w_gate, mlp.w_up (d_ff, C), mlp.w_down (C, d_ff)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from triptych.common.checks import InputError
from triptych.common.llama_config import LAYER_ATTN_KEYS, LAYER_KEYS, LlamaConfig, check_layer_inputs
from numpy_impl import swiglu
from numpy_impl.gqa import grouped_query_attention, grouped_query_attention_backward
from numpy_impl.masks import make_causal_mask
from numpy_impl.multihead import linear, linear_backward, merge_heads, merge_heads_backward, split_heads, split_heads_backward
from numpy_impl.norms import rms_norm_backward, rms_norm_forward
from numpy_impl.positional import apply_rope, apply_rope_backward

__all__ = ["rope_self_attention", "llama_block", "llama_layer"]
# The (out, cache) forwards exist for the hand-written backward; JAX and torch differentiate automatically.
__backend_only__ = ["rope_self_attention_forward", "llama_block_forward", "AttentionCache", "LlamaLayerCache"]

ATTN_KEYS, BLOCK_KEYS = LAYER_ATTN_KEYS, LAYER_KEYS
MLP_KEYS = ("w_gate", "w_up", "w_down")


class AttentionCache(NamedTuple):
    """The attention half's activations, in forward order (kept for the backward and the tracer)."""
    h: np.ndarray  # (B, T, C) the attention's input (the normed residual stream)
    p: dict  # w_q (H*D, C), w_k, w_v (H_kv*D, C), w_o (C, H*D)
    positions: np.ndarray  # (T,) or (B, T) the absolute positions RoPE rotated q and k by
    q: np.ndarray  # (B, H, T, D) h W_q^T in heads, before RoPE
    k: np.ndarray  # (B, H_kv, T, D)
    v: np.ndarray  # (B, H_kv, T, D) never rotated
    q_rope: np.ndarray  # (B, H, T, D)
    k_rope: np.ndarray  # (B, H_kv, T, D)
    weights: np.ndarray | None  # (B, H, T, T) softmax probabilities; None when attending a KV cache
    kv: Any  # the KV cache after this call ({"k", "v"}: (B, H_kv, T_past + T, D)), None without one
    attention: np.ndarray  # (B, T, H*D) merged heads, o_proj's input
    o_proj: np.ndarray  # (B, T, C) attention W_o^T


class LlamaLayerCache(NamedTuple):
    """One layer's activations, in forward order (the names trace.LLAMA_STEPS reports)."""
    x: np.ndarray  # (B, T, C) the layer's input
    attn_norm: np.ndarray  # (B, T, C) rms_norm(x, attn_norm.weight)
    attn_norm_cache: tuple  # norms.rms_norm_forward's cache
    attn: AttentionCache  # q, k, v, q_rope, k_rope, weights, attention, o_proj
    resid_attn: np.ndarray  # (B, T, C) x + o_proj
    mlp_norm: np.ndarray  # (B, T, C) rms_norm(resid_attn, mlp_norm.weight)
    mlp_norm_cache: tuple
    gate: np.ndarray  # (B, T, d_ff) mlp_norm W_gate^T, before SiLU
    up: np.ndarray  # (B, T, d_ff) mlp_norm W_up^T
    mlp: np.ndarray  # (B, T, C) swiglu_mlp(mlp_norm)
    mlp_cache: tuple  # swiglu.swiglu_mlp_forward's cache
    out: np.ndarray  # (B, T, C) resid_attn + mlp, the layer's output


def causal_attend(q, k, v):
    """attend for a whole sequence: query t sees keys 0..t. Shapes: q (B, H, T, D), k, v (B, H_kv, T, D)
    -> a (B, H, T, D), weights (B, H, T, T), kv None"""
    a, weights = grouped_query_attention(q, k, v, make_causal_mask(q.shape[2]))
    return a, weights, None


def attention_forward(h, p: dict, config: LlamaConfig, positions, attend: Callable = causal_attend):
    """Grouped-query self-attention with RoPE. p: w_q, w_k, w_v, w_o.

    Shapes: h (B, T, C), positions (T,) or (B, T) -> out (B, T, C), AttentionCache
    """
    q = split_heads(linear(h, p["w_q"]), config.n_heads)  # (B, H, T, D)
    k = split_heads(linear(h, p["w_k"]), config.n_kv_heads)  # (B, H_kv, T, D)
    v = split_heads(linear(h, p["w_v"]), config.n_kv_heads)
    rope = dict(positions=positions, base=config.rope_base, layout=config.rope_layout)
    q_rope, k_rope = apply_rope(q, **rope), apply_rope(k, **rope)  # queries and keys only, never values
    a, weights, kv = attend(q_rope, k_rope, v)  # (B, H, T, D)
    attention = merge_heads(a)  # (B, T, H*D)
    o_proj = linear(attention, p["w_o"])
    return o_proj, AttentionCache(h, p, positions, q, k, v, q_rope, k_rope, weights, kv, attention, o_proj)


def _linear_back(dy, x, w, name: str, grads: dict, want) -> np.ndarray:
    """y = x W^T: dx = dy W always; dW = dy^T x into grads[name] only when name is in want (a frozen
    weight's dW is a matmul as large as dx's, wasted). dx is the same array either way."""
    if name not in want:  # one 2-D matmul over the folded batch and time axes, as linear_backward
        return (dy.reshape(-1, dy.shape[-1]) @ w).reshape(*dy.shape[:-1], w.shape[1])
    dx, grads[name], _ = linear_backward(dy, x, w)
    return dx


def _wanted(weights, keys) -> tuple:
    """The weights whose gradient the backward forms: all of keys for None, else a subset of them."""
    if weights is None:
        return tuple(keys)
    if isinstance(weights, str) or not set(weights) <= set(keys):
        raise InputError(f"weights: expected None or a collection of names from {list(keys)}, got {weights!r}")
    return tuple(weights)


def attention_backward(dout, cache: AttentionCache, config: LlamaConfig, weights=None):
    """weights: the ATTN_KEYS whose gradient to form (None: all four); dh is always formed.

    Shapes: dout (B, T, C) -> dh (B, T, C), grads {w_q, w_k, w_v, w_o} (the keys in weights only)
    """
    c, g, want = cache, {}, _wanted(weights, ATTN_KEYS)
    dattention = _linear_back(dout, c.attention, c.p["w_o"], "w_o", g, want)  # o_proj = attention W_o^T
    da = merge_heads_backward(dattention, config.n_heads)  # attention = merge_heads(a)
    dq, dk, dv = grouped_query_attention_backward(da, c.q_rope, c.k_rope, c.v, c.weights)  # KV groups summed
    rope = dict(positions=c.positions, base=config.rope_base, layout=config.rope_layout)
    dq, dk = apply_rope_backward(dq, **rope), apply_rope_backward(dk, **rope)  # q_rope, k_rope = rope(q), rope(k)
    dh = np.zeros_like(c.h)
    for name, d in (("w_q", dq), ("w_k", dk), ("w_v", dv)):  # q, k, v = split_heads(h W^T): h feeds all three
        dh += _linear_back(split_heads_backward(d), c.h, c.p[name], name, g, want)
    return dh, g


def _part(p: dict, part: str) -> dict:
    return {k[len(part) + 1:]: v for k, v in p.items() if k.startswith(part + ".")}


def _names_in(keys, part: str) -> tuple:
    """("attn.w_q", "mlp.w_up") and "mlp" -> ("w_up",): the part's own names, as its backward takes them."""
    return tuple(k[len(part) + 1:] for k in keys if k.startswith(part + "."))


def llama_layer(x, p: dict, config: LlamaConfig, positions, attend: Callable = causal_attend):
    """One pre-norm decoder layer: x + attn(rms_norm(x)), then + swiglu_mlp(rms_norm(x)).
    p: the layer's LAYER_KEYS (no `layers.{i}.` prefix).

    Shapes: x (B, T, C), positions (T,) or (B, T) -> out (B, T, C), LlamaLayerCache
    """
    attn_norm, n1 = rms_norm_forward(x, p["attn_norm.weight"], config.norm_eps)
    o_proj, attn = attention_forward(attn_norm, _part(p, "attn"), config, positions, attend)
    resid_attn = x + o_proj
    mlp_norm, n2 = rms_norm_forward(resid_attn, p["mlp_norm.weight"], config.norm_eps)
    mlp, mlp_cache = swiglu.swiglu_mlp_forward(mlp_norm, _part(p, "mlp"))  # read at call time: tests replace it
    gate, up = mlp_cache[4][0], mlp_cache[1]  # the products swiglu_mlp formed: its silu input and up
    out = resid_attn + mlp
    return out, LlamaLayerCache(x, attn_norm, n1, attn, resid_attn, mlp_norm, n2, gate, up, mlp, mlp_cache, out)


def llama_layer_backward(dout, cache: LlamaLayerCache, config: LlamaConfig, weights=None):
    """weights: the LAYER_KEYS whose gradient to form (None: all of them). LoRA asks only for its
    targets: the others are frozen, and their dW matmuls (the MLP's three the largest) are skipped.
    dx is always formed, and every gradient is the same array whichever others are asked for.

    Shapes: dout (B, T, C) -> dx (B, T, C), grads {the LAYER_KEYS in weights}
    """
    want, grads = _wanted(weights, LAYER_KEYS), {}
    # out = resid_attn + mlp(rms_norm(resid_attn)): the residual passes dout through, the branch adds its part.
    dmlp_norm, g = swiglu.swiglu_mlp_backward(dout, cache.mlp_cache, _names_in(want, "mlp"))
    grads.update({"mlp." + k: t for k, t in g.items()})
    dresid, dnorm = rms_norm_backward(dmlp_norm, cache.mlp_norm_cache)
    if "mlp_norm.weight" in want:  # a (C,) sum: cheap, but kept out of the answer unless asked for
        grads["mlp_norm.weight"] = dnorm
    dresid = dresid + dout
    # resid_attn = x + attn(rms_norm(x))
    dattn_norm, g = attention_backward(dresid, cache.attn, config, _names_in(want, "attn"))
    grads.update({"attn." + k: t for k, t in g.items()})
    dx, dnorm = rms_norm_backward(dattn_norm, cache.attn_norm_cache)
    if "attn_norm.weight" in want:
        grads["attn_norm.weight"] = dnorm
    return dx + dresid, {k: grads[k] for k in LAYER_KEYS if k in grads}


# ----------------------------------------------------------------------------------------------
# addressed by sizes (CS336): the one-layer LlamaConfig these weights describe


def _config(x, params: dict, keys, n_heads: int, base: float, layout: str, eps: float, d_ff: int = 1) -> LlamaConfig:
    """Every head its own keys: n_kv_heads = n_heads."""
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
    out, cache = attention_forward(x, params, config, _positions(x, positions))
    return out, (cache, config)


def rope_self_attention_backward(dout: np.ndarray, cache):
    """Shapes: dout (B, T, C) -> dx (B, T, C), grads {w_q, w_k, w_v, w_o}"""
    inner, config = cache
    return attention_backward(dout, inner, config)


def rope_self_attention(x: np.ndarray, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved") -> np.ndarray:
    """Causal multi-head self-attention, RoPE on queries and keys. Shapes: x (B, T, C) -> (B, T, C)"""
    return rope_self_attention_forward(x, params, n_heads, positions, base, layout)[0]


def llama_block_forward(x: np.ndarray, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                        layout: str = "interleaved", eps: float = 1e-5):
    """Shapes: x (B, T, C) -> out (B, T, C), cache"""
    d_ff = int(params["mlp.w_gate"].shape[0]) if isinstance(params, dict) and "mlp.w_gate" in params else 1
    config = _config(x, params, BLOCK_KEYS, n_heads, base, layout, eps, d_ff)
    out, cache = llama_layer(x, params, config, _positions(x, positions))
    return out, (cache, config)


def llama_block_backward(dout: np.ndarray, cache):
    """Shapes: dout (B, T, C) -> dx (B, T, C), grads {BLOCK_KEYS}"""
    inner, config = cache
    return llama_layer_backward(dout, inner, config)


def llama_block(x: np.ndarray, params: dict, n_heads: int, positions=None, base: float = 10000.0,
                layout: str = "interleaved", eps: float = 1e-5) -> np.ndarray:
    """Pre-norm decoder layer: RMSNorm -> RoPE attention -> residual, RMSNorm -> SwiGLU -> residual.

    Shapes: x (B, T, C), positions (T,) or (B, T) -> (B, T, C)
    """
    return llama_block_forward(x, params, n_heads, positions, base, layout, eps)[0]
