"""The GPT's non-attention layers in JAX; mirrors numpy_impl/layers.py name for name (read that for
the maths). jax.grad differentiates these, so there are no `*_forward` / `*_backward` pairs here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.checks import InputError, check_float, check_ndim, check_same
from jax_impl.multihead import linear, multihead_attention

__all__ = ["linear", "embedding", "layer_norm", "gelu", "mlp", "dropout", "transformer_block"]

MLP_KEYS = ("w_fc", "b_fc", "w_proj", "b_proj")


def embedding(idx, table):
    """Shapes: idx (...) ints in [0, V), table (V, C) -> (..., C)"""
    check_ndim("table", table, 2, "(V, C)")
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise InputError(f"idx: expected integer token ids, got dtype {idx.dtype}")
    if not isinstance(idx, jax.core.Tracer) and idx.size:
        lo, hi = int(np.min(idx)), int(np.max(idx))
        if lo < 0 or hi >= table.shape[0]:
            raise InputError(f"idx: expected token ids in [0, {table.shape[0]}), got values in [{lo}, {hi}]")
    return jnp.take(table, idx, axis=0)


def layer_norm(x, weight, bias, eps: float = 1e-5):
    """Shapes: x (..., C), weight (C,), bias (C,) -> (..., C)"""
    check_float("x", x)
    check_same("weight", weight.shape[-1], "x's last axis (C)", x.shape[-1], "size")
    mean = x.mean(axis=-1, keepdims=True)
    # x - mean once, used twice: written out twice, XLA:CPU's program under jax.grad ran ~10% slower.
    centered = x - mean
    var = (centered ** 2).mean(axis=-1, keepdims=True)
    return centered * jax.lax.rsqrt(var + eps) * weight + bias


def gelu(x):
    """GPT-2's tanh approximation (jax.nn.gelu's default). Shapes: any -> same"""
    return jax.nn.gelu(x, approximate=True)


def mlp(x, params: dict):
    """Shapes: x (..., C) -> (..., C)"""
    missing = [k for k in MLP_KEYS if k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(MLP_KEYS)}, missing {missing}")
    return gelu(x @ params["w_fc"].T + params["b_fc"]) @ params["w_proj"].T + params["b_proj"]


def dropout(x, p: float, rng):
    """Inverted dropout with a jax.random key; rng=None or p=0 is the identity (evaluation).

    Shapes: any -> same
    """
    if not 0.0 <= p < 1.0:
        raise InputError(f"p: expected a probability in [0, 1), got {p!r}")
    if rng is None or p == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - p, x.shape)
    return jnp.where(keep, x / (1.0 - p), 0.0).astype(x.dtype)


def transformer_block(x, params: dict, n_head: int, mask=None):
    """Pre-LN block: x + attn(ln_1(x)), then + mlp(ln_2(x)); attention via jax_impl.multihead.

    Shapes: x (B, T, C), mask broadcastable to (B, H, T, T) -> (B, T, C)
    """
    check_ndim("x", x, 3, "(B, T, C)")
    attn = {k[5:]: v for k, v in params.items() if k.startswith("attn.")}
    x = x + multihead_attention(layer_norm(x, params["ln_1.weight"], params["ln_1.bias"]), attn, n_head, mask=mask)[0]
    return x + mlp(layer_norm(x, params["ln_2.weight"], params["ln_2.bias"]),
                   {k[4:]: v for k, v in params.items() if k.startswith("mlp.")})
