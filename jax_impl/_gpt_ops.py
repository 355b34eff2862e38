"""The small operations of jax_impl.gpt and jax_impl.gpt_variants, written inline so the GPT compiles
to exactly these steps (jax_impl.layers holds the checked, public versions of the layers)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def ln(x, w, b, eps=1e-5):
    """Shapes: x (..., C), w, b (C,) -> (..., C)"""
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance, as torch's layer_norm
    return (x - mu) * jax.lax.rsqrt(var + eps) * w + b


def gelu(x):
    """tanh approximation (GPT-2's). Shapes: any -> same"""
    return 0.5 * x * (1.0 + jnp.tanh(jnp.sqrt(2.0 / jnp.pi).astype(x.dtype) * (x + 0.044715 * x ** 3)))


def linear(x, w, b=None):
    """Shapes: x (..., d_in), w (d_out, d_in), b (d_out,) -> (..., d_out)"""
    y = x @ w.T
    return y if b is None else y + b


def dropout(x, p: float, key):
    """Inverted dropout; returns the key to use next (off without a key). Shapes: any -> same, key"""
    if key is None or p == 0.0:
        return x, key
    key, sub = jax.random.split(key)
    keep = jax.random.bernoulli(sub, 1.0 - p, x.shape)
    return jnp.where(keep, x / (1.0 - p), 0.0).astype(x.dtype), key
