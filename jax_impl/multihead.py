"""Multi-head attention in JAX; mirrors numpy_impl/multihead.py name for name (read that for the maths)."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from triptych.common.checks import (
    check_heads,
    check_mask,
    check_ndim,
    check_same,
)
from triptych.common.params import MHA_KEYS, init_mha_params, mha_params_from_torch, mha_params_to_torch
from triptych.common.backend_checks import check_mha_params, check_sequence
from jax_impl._checks import all_finite_each
from jax_impl.attention import _sdpa, scaled_dot_product_attention
from jax_impl.masks import make_causal_mask

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


def linear(x, w, b=None):
    """Shapes: x (..., d_in), w (d_out, d_in), b (d_out,) -> (..., d_out)"""
    check_same("w", w.shape[-1], "x's last axis (d_in)", x.shape[-1], "input size")
    y = x @ w.T
    return y if b is None else y + b


def split_heads(x, n_heads: int):
    """Shapes: (B, T, C) -> (B, H, T, C/H)"""
    check_ndim("x", x, 3, "(B, T, C)")
    check_heads(x.shape[-1], n_heads)
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """Shapes: (B, H, T, D) -> (B, T, H*D)"""
    check_ndim("x", x, 4, "(B, H, T, D)")
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


@partial(jax.jit, static_argnames="n_heads")
def _qkv(x, kv, params, n_heads):
    def proj(t, w, b):
        B, T, C = t.shape
        return (t @ w.T + b).reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)

    return (proj(x, params["w_q"], params["b_q"]), proj(kv, params["w_k"], params["b_k"]),
            proj(kv, params["w_v"], params["b_v"]))


@partial(jax.jit, static_argnames="n_heads")
def _mha(x, kv, params, n_heads, mask):
    q, k, v = _qkv(x, kv, params, n_heads)
    heads, weights = _sdpa(q, k, v, mask, 1.0 / (q.shape[-1] ** 0.5))
    B, H, T, D = heads.shape
    merged = heads.transpose(0, 2, 1, 3).reshape(B, T, H * D)
    return merged @ params["w_o"].T + params["b_o"], weights


def get_multihead_qkv(x, params: dict, n_heads: int, kv=None):
    """Shapes: x (B, T_q, C), kv (B, T_k, C) -> q (B, H, T_q, C/H), k, v (B, H, T_k, C/H)"""
    _check_sequence("x", x)
    d_model = x.shape[-1]
    check_heads(d_model, n_heads)
    check_mha_params(params, d_model)
    if kv is not None:
        _check_sequence("kv", kv, d_model)
        check_same("kv", kv.shape[0], "x's batch axis", x.shape[0], "batch size")
    return _qkv(x, x if kv is None else kv, {k: params[k] for k in MHA_KEYS}, n_heads)


def calculate_multihead_attention(q, k, v, mask=None):
    """Shapes: q (B, H, T_q, D), k, v (B, H, T_k, D) -> out (B, H, T_q, D), weights (B, H, T_q, T_k)"""
    check_ndim("q", q, 4, "(B, H, T_q, D)")
    check_ndim("k", k, 4, "(B, H, T_k, D)")
    check_ndim("v", v, 4, "(B, H, T_k, D)")
    # The plain jitted steps, as in numpy_impl; jax_impl/flash.py's fast_attention gives the same
    # numbers faster, for a caller that asks for it by name.
    return scaled_dot_product_attention(q, k, v, mask=mask)


def multihead_attention(x, params: dict, n_heads: int, kv=None, mask=None):
    """Shapes: x (B, T_q, C), kv (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, H, T_q, T_k)
    """
    _check_sequence("x", x)
    d_model = x.shape[-1]
    check_heads(d_model, n_heads)
    check_mha_params(params, d_model)
    kv_ = x if kv is None else kv
    if kv is not None:
        _check_sequence("kv", kv, d_model)
        check_same("kv", kv.shape[0], "x's batch axis", x.shape[0], "batch size")
    if mask is not None:
        check_mask("mask", mask, (x.shape[0], n_heads, x.shape[1], kv_.shape[1]))
    return _mha(x, kv_, {k: params[k] for k in MHA_KEYS}, n_heads, mask)


def self_attention(x, params: dict, n_heads: int, causal: bool = False):
    """Shapes: x (B, T, C) -> out (B, T, C), weights (B, H, T, T)"""
    _check_sequence("x", x)
    mask = make_causal_mask(x.shape[1]) if causal else None
    return multihead_attention(x, params, n_heads, mask=mask)


@partial(jax.jit, static_argnames=("n_heads",))
def _mha_class_forward(params, query, key, value, mask, n_heads):
    B, T_q, C = query.shape
    T_k, D = key.shape[1], C // n_heads
    q = (query @ params["w_q"].T + params["b_q"]).reshape(B, T_q, n_heads, D)
    k = (key @ params["w_k"].T + params["b_k"]).reshape(B, T_k, n_heads, D)
    v = (value @ params["w_v"].T + params["b_v"]).reshape(B, T_k, n_heads, D)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / (D ** 0.5)
    if mask is not None:
        scores = jnp.where(mask, scores, -jnp.inf)
    row_max = jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
    e = jnp.exp(scores - jnp.where(jnp.isneginf(row_max), 0.0, row_max))
    denom = e.sum(axis=-1, keepdims=True)
    weights = e / jnp.where(denom == 0.0, 1.0, denom)
    heads = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(B, T_q, C)
    return heads @ params["w_o"].T + params["b_o"], weights


class MultiHeadAttention:
    """Self-contained multi-head attention (batch-first), one jitted function; mirrors numpy_impl.

    Shapes: query (B, T_q, C), key/value (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, T_q, T_k) averaged over heads or (B, H, T_q, T_k)
    """

    def __init__(self, d_model: int, n_heads: int, params: dict | None = None, seed: int = 0, dtype=jnp.float64):
        check_heads(d_model, n_heads)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        params = init_mha_params(d_model, seed, dtype) if params is None else params
        check_mha_params(params, d_model)
        self.params = {k: jnp.asarray(params[k]) for k in MHA_KEYS}

    @classmethod
    def from_torch(cls, module) -> "MultiHeadAttention":
        return cls(module.embed_dim, module.num_heads, params=mha_params_from_torch(module.state_dict()))

    def load_state_dict(self, state_dict) -> None:
        params = mha_params_from_torch(state_dict)
        check_mha_params(params, self.d_model)
        self.params = {k: jnp.asarray(v) for k, v in params.items()}

    def state_dict(self) -> dict:
        return mha_params_to_torch({k: jax.device_get(v) for k, v in self.params.items()})

    def __call__(self, query, key=None, value=None, mask=None, need_weights: bool = True,
                 average_attn_weights: bool = True):
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            _check_sequence(name, t, self.d_model)
        check_same("value", value.shape[1], "key's sequence axis (T_k)", key.shape[1], "sequence length")
        if mask is not None:
            check_mask("mask", mask, (query.shape[0], self.n_heads, query.shape[1], key.shape[1]))
        out, weights = _mha_class_forward(self.params, query, key, value, mask, self.n_heads)
        if not need_weights:
            return out, None
        return out, (weights.mean(axis=1) if average_attn_weights else weights)
