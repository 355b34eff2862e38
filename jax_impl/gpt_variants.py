"""The course's attention experiments in JAX (docs/course.md, section I): the pieces that plug into
the straight GPT of jax_impl.gpt, the same functions as numpy_impl.gpt_variants, written from their
definitions and differentiated by jax.grad. GPTConfig's fields name the variant
(triptych/common/gpt_config.py); block_attention(config) is None when the config names none.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.gpt_config import GPTConfig, qkv_sources, straight_attention
from jax_impl._gpt_ops import dropout, gelu, linear
from jax_impl.masks import alibi_bias
from jax_impl.positional import rope_cos_sin, sinusoidal_encoding

__all__ = ["neg_sq_distance", "cosine_similarity", "aft_simple", "project_qkv", "attention", "add_positions",
           "block_attention"]


def neg_sq_distance(q, k, scale: float):
    """-|q - k|^2 * scale, from the differences themselves.
    Shapes: q (..., T_q, D), k (..., T_k, D) -> (..., T_q, T_k)"""
    return -jnp.sum((q[..., :, None, :] - k[..., None, :, :]) ** 2, axis=-1) * scale


def cosine_similarity(q, k, temperature):
    """temperature * cos(q, k), norms floored at 1e-12 as torch's F.normalize.
    Shapes: q (..., T_q, D), k (..., T_k, D), temperature broadcastable to (..., 1, 1) -> (..., T_q, T_k)"""
    qn = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    kn = k / jnp.maximum(jnp.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    return temperature * (qn @ kn.swapaxes(-1, -2))


def aft_simple(q, k, v):
    """Causal AFT-simple, per channel: a softmax over time of k, gated by sigmoid(q).
    Shapes: q, k, v (B, T, C) -> (B, T, C)"""
    e = jnp.exp(k - jax.lax.stop_gradient(k.max(axis=1, keepdims=True)))  # the max cancels
    return jax.nn.sigmoid(q) * (jnp.cumsum(e * v, axis=1) / jnp.cumsum(e, axis=1))


def project_qkv(h, params: dict, config: GPTConfig):
    """q, k, v from shared projections or small MLPs, each distinct one computed once.
    params: a layer's `attn.` keys without the prefix. Shapes: h (B, T, C) -> q, k, v (B, T, C)"""
    src, out = qkv_sources(config), {}
    for n in dict.fromkeys(src.values()):
        if config.qkv_mlp:
            m = f"mlp_{n}."
            out[n] = linear(gelu(linear(h, params[m + "w_fc"], params[m + "b_fc"])), params[m + "w_proj"], params[m + "b_proj"])
        else:
            out[n] = linear(h, params[f"w_{n}"], params[f"b_{n}"])
    return out[src["q"]], out[src["k"]], out[src["v"]]


def _rotate(x):
    """RoPE, rotate_half layout. Shapes: (B, H, T, D) -> same"""
    cos, sin = rope_cos_sin(np.arange(x.shape[-2]), x.shape[-1], dtype=x.dtype)
    d = x.shape[-1] // 2
    return x * cos + jnp.concatenate([-x[..., d:], x[..., :d]], axis=-1) * sin


def _attention(h, params: dict, config: GPTConfig, key):
    """Shapes: h (B, T, C) -> (B, T, C), the next dropout key"""
    q, k, v = project_qkv(h, params, config)
    if config.attention == "aft_simple":
        return linear(aft_simple(q, k, v), params["w_o"], params["b_o"]), key
    B, T, C = h.shape
    H, D = config.n_head, C // config.n_head
    q, k, v = (t.reshape(B, T, H, D).transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, H, T, D)
    if config.positions == "rope":
        q, k = _rotate(q), _rotate(k)
    scale = 1.0 / math.sqrt(D)  # a Python float is weakly typed: float32 inputs stay float32
    if config.similarity == "dot":
        scores = (q * scale) @ k.swapaxes(-1, -2)
    elif config.similarity == "neg_sq_dist":
        scores = neg_sq_distance(q, k, scale)
    else:  # one learned temperature per head, stored as its log
        scores = cosine_similarity(q, k, jnp.exp(params["log_temp"])[:, None, None])
    if config.positions == "alibi":  # a constant (H, T, T) penalty on distance, after the scale
        scores = scores + alibi_bias(H, T, dtype=scores.dtype)
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    if config.post_softmax_mask:  # the wrong way: the future takes part in the normaliser
        weights = jax.nn.softmax(scores, axis=-1) * causal
    else:
        weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    weights, key = dropout(weights, config.dropout, key)
    y = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return linear(y, params["w_o"], params["b_o"]), key


def attention(h, params: dict, config: GPTConfig, rng=None):
    """Causal self-attention with the experiments the config names; dropout with a jax PRNG key.
    Shapes: h (B, T, C) -> (B, T, C)"""
    return _attention(h, params, config, rng)[0]


def block_attention(config: GPTConfig):
    """The attention jax_impl.gpt's blocks run for this config: None for the straight one, else
    f(h, params, key) -> (out, next key)."""
    if straight_attention(config):
        return None
    return lambda h, params, key: _attention(h, params, config, key)


def add_positions(tok, params: dict, config: GPTConfig):
    """tok (* sqrt(C)) + the config's position signal (wpe[:T], sinusoidal, or none).
    Shapes: tok (B, T, C) -> (B, T, C)"""
    T, C = tok.shape[1], config.n_embd
    x = tok * math.sqrt(C) if config.scale_embeddings else tok
    if config.positions == "learned":
        x = x + params["wpe.weight"][:T]
    elif config.positions == "sinusoidal":
        x = x + sinusoidal_encoding(T, C, dtype=x.dtype)
    return x
