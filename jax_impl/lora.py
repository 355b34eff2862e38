"""LoRA in JAX; mirrors numpy_impl/lora.py name for name (read that for the maths).

The arithmetic runs in jitted functions; the scaling s = alpha/r (or alpha/sqrt(r)) is a traced
scalar, so changing alpha or the rsLoRA switch does not recompile. JAX differentiates the adapter
itself (jax.grad with respect to lora_A and lora_B), so there is no hand-written backward here.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from triptych.common.checks import check_finite, check_positive_int, check_shape
from jax_impl._checks import all_finite
from jax_impl.multihead import calculate_multihead_attention, get_multihead_qkv, linear, merge_heads, split_heads
from triptych.common.lora_checks import (  # one wording of every error in all three backends
    check_alpha,
    check_dropout_p,
    check_init,
    check_linear_args,
    check_lora,
    check_lora_mha,
    check_mha_params,
    check_rank,
    check_targets,
)

__all__ = [
    "lora_scaling",
    "init_lora_params",
    "lora_dropout_mask",
    "lora_delta",
    "lora_branch",
    "lora_linear",
    "merge_lora",
    "unmerge_lora",
    "init_lora_mha_params",
    "lora_multihead_attention",
    "merge_lora_mha",
    "merge_adapters",
]


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """Shapes: scalars -> scalar"""
    check_positive_int("r", r)
    check_alpha(alpha)
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def init_lora_params(d_in: int, d_out: int, r: int, init: str = "default", seed: int = 0, dtype=jnp.float64):
    """Same distributions as numpy_impl (peft's inits), drawn with jax.random.

    Shapes: -> lora_A (r, d_in), lora_B (d_out, r)
    """
    check_positive_int("d_in", d_in)
    check_positive_int("d_out", d_out)
    check_rank(r, d_in, d_out)
    check_init(init)
    key_a, key_b = jax.random.split(jax.random.PRNGKey(seed))
    if init == "gaussian":
        a = jax.random.normal(key_a, (r, d_in), dtype) / r
    else:
        bound = 1.0 / math.sqrt(d_in)
        a = jax.random.uniform(key_a, (r, d_in), dtype, -bound, bound)
    if init == "random":
        bound = 1.0 / math.sqrt(r)
        b = jax.random.uniform(key_b, (d_out, r), dtype, -bound, bound)
    else:
        b = jnp.zeros((d_out, r), dtype)
    return {"lora_A": a, "lora_B": b}


def lora_dropout_mask(shape, p: float, seed: int = 0, dtype=jnp.float64):
    """Shapes: shape of x -> same (0 with probability p, else 1/(1-p))"""
    check_dropout_p(p)
    keep = jax.random.uniform(jax.random.PRNGKey(seed), tuple(shape)) >= p
    return (keep / (1.0 - p)).astype(dtype)


@jax.jit
def _delta(a, b, s):
    return s * (b @ a)


def lora_delta(lora: dict, alpha: float, use_rslora: bool = False):
    """Shapes: lora_A (r, d_in), lora_B (d_out, r) -> (d_out, d_in)"""
    r = check_lora(lora)
    return _delta(lora["lora_A"], lora["lora_B"], lora_scaling(r, alpha, use_rslora))


@jax.jit
def _branch(x, a, b, s, mask):
    xd = x if mask is None else x * mask
    return s * ((xd @ a.T) @ b.T)


@jax.jit
def _lora_linear(x, w, bias, a, b, s, mask):
    y = x @ w.T + _branch(x, a, b, s, mask)
    return y if bias is None else y + bias


def lora_branch(x, lora: dict, scaling: float, dropout_mask=None):
    """Shapes: x (..., d_in), lora_A (r, d_in), lora_B (d_out, r) -> (..., d_out)"""
    check_lora(lora, x.shape[-1])
    if dropout_mask is not None:
        check_shape("dropout_mask", dropout_mask, x.shape)
    return _branch(x, lora["lora_A"], lora["lora_B"], scaling, dropout_mask)


def lora_linear(x, w, b, lora: dict, alpha: float, use_rslora: bool = False, dropout_mask=None):
    """Shapes: x (..., d_in), w (d_out, d_in), b (d_out,), lora_A (r, d_in), lora_B (d_out, r) -> (..., d_out)"""
    r = check_linear_args(x, w, b, lora)
    check_finite("x", all_finite(x))
    if dropout_mask is not None:
        check_shape("dropout_mask", dropout_mask, x.shape)
    return _lora_linear(x, w, b, lora["lora_A"], lora["lora_B"], lora_scaling(r, alpha, use_rslora), dropout_mask)


def merge_lora(w, lora: dict, alpha: float, use_rslora: bool = False):
    """Shapes: w (d_out, d_in) -> (d_out, d_in)"""
    check_shape("w", w, (None, None))
    check_lora(lora, w.shape[1], w.shape[0])
    return w + lora_delta(lora, alpha, use_rslora)


def merge_adapters(params: dict, adapters: dict, alpha: float) -> tuple[dict, dict]:
    """params with every adapter folded in, and the scaling of each: for every "<key>.lora_A" /
    "<key>.lora_B" pair in adapters, params[key] becomes merge_lora's W + s B A (s = alpha / r, r read
    from A). Weights without an adapter are shared, not copied.

    Shapes: params {key: (d_out, d_in), ...}, adapters {key.lora_A: (r, d_in), key.lora_B: (d_out, r)}
            -> (params' keys and shapes, {key: s})
    """
    merged, scale = dict(params), {}
    for a_key in adapters:
        if a_key.endswith(".lora_A"):
            key = a_key[: -len(".lora_A")]
            lora = {"lora_A": adapters[a_key], "lora_B": adapters[key + ".lora_B"]}
            merged[key] = merge_lora(params[key], lora, alpha)
            scale[key] = lora_scaling(int(lora["lora_A"].shape[0]), alpha)
    return merged, scale


def unmerge_lora(w_merged, lora: dict, alpha: float, use_rslora: bool = False):
    """Shapes: w_merged (d_out, d_in) -> (d_out, d_in)"""
    check_shape("w_merged", w_merged, (None, None))
    check_lora(lora, w_merged.shape[1], w_merged.shape[0])
    return w_merged - lora_delta(lora, alpha, use_rslora)


def init_lora_mha_params(d_model: int, r: int, targets=("q", "v"), init: str = "default", seed: int = 0,
                         dtype=jnp.float64):
    """Shapes: -> {target: {lora_A (r, C), lora_B (C, r)}}"""
    targets = check_targets(targets)
    return {t: init_lora_params(d_model, d_model, r, init, seed + i, dtype) for i, t in enumerate(targets)}


def lora_multihead_attention(x, params: dict, lora_params: dict, n_heads: int, alpha: float,
                             use_rslora: bool = False, kv=None, mask=None):
    """Shapes: x (B, T_q, C), kv (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, H, T_q, T_k)
    """
    q, k, v = get_multihead_qkv(x, params, n_heads, kv)  # the frozen projections (and all their checks)
    targets = check_lora_mha(lora_params, x.shape[-1])
    s = {t: lora_scaling(int(lora_params[t]["lora_A"].shape[0]), alpha, use_rslora) for t in targets}
    kv = x if kv is None else kv
    if "q" in targets:
        q = q + split_heads(lora_branch(x, lora_params["q"], s["q"]), n_heads)
    if "k" in targets:
        k = k + split_heads(lora_branch(kv, lora_params["k"], s["k"]), n_heads)
    if "v" in targets:
        v = v + split_heads(lora_branch(kv, lora_params["v"], s["v"]), n_heads)
    heads, weights = calculate_multihead_attention(q, k, v, mask)
    merged = merge_heads(heads)
    out = linear(merged, params["w_o"], params["b_o"])
    if "o" in targets:
        out = out + lora_branch(merged, lora_params["o"], s["o"])
    return out, weights


def merge_lora_mha(params: dict, lora_params: dict, alpha: float, use_rslora: bool = False) -> dict:
    """Shapes: {w_*: (C, C), b_*: (C,)} -> same"""
    check_mha_params(params)
    targets = check_lora_mha(lora_params, params["w_q"].shape[0])
    merged = dict(params)
    for t in targets:
        merged[f"w_{t}"] = merge_lora(params[f"w_{t}"], lora_params[t], alpha, use_rslora)
    return merged
