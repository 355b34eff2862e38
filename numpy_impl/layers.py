"""The layers of a GPT besides attention, each as a forward/backward pair in plain NumPy.

    embedding    x = table[idx]                                 a row lookup
    layer_norm   y = (x - mean) / sqrt(var + eps) * w + b       over the last axis
    gelu         y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   GPT-2's tanh approximation
    mlp          y = gelu(x W_fc^T + b_fc) W_proj^T + b_proj     the feed-forward network (C -> 4C -> C)
    dropout      y = x * keep / (1 - p)                          inverted dropout, training only
    transformer_block  x + attn(ln_1(x)), then + mlp(ln_2(x))   the pre-LayerNorm residual block

Every layer comes three ways: `name(...)` returns the output (the same call exists in jax_impl and
torch_ref), `name_forward(...) -> (out, cache)` also returns what the backward needs, and
`name_backward(dout, cache)` returns fresh gradients for every input and parameter. Each backward
line says which forward step it inverts. `linear` is numpy_impl.multihead's, re-exported here.

Each formula is computed the way it is written above, one step per line. numpy_impl/fast.py has
in-place forms of gelu and layer_norm (same names, arguments and caches) for a caller that wants
speed and asks for them by name; this file does not import it.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

from triptych.common.checks import InputError, check_float, check_ndim, check_same
from numpy_impl.attention import (
    attn_softmax,
    attn_softmax_backward,
    compute_outputs,
    compute_outputs_backward,
    pairwise_similarities,
    pairwise_similarities_backward,
)
from numpy_impl.multihead import (
    linear,
    linear_backward,
    merge_heads,
    merge_heads_backward,
    split_heads,
    split_heads_backward,
)

__all__ = [
    "linear",
    "linear_backward",
    "embedding",
    "embedding_forward",
    "embedding_backward",
    "layer_norm",
    "layer_norm_forward",
    "layer_norm_backward",
    "gelu",
    "gelu_forward",
    "gelu_backward",
    "mlp",
    "mlp_forward",
    "mlp_backward",
    "dropout",
    "dropout_forward",
    "dropout_backward",
    "transformer_block",
    "transformer_block_forward",
    "transformer_block_backward",
]
# The (out, cache) forwards exist for the hand-written backward; JAX and torch differentiate
# automatically, so they only have the plain forwards.
__backend_only__ = [n for n in __all__ if n.endswith("_forward")]

MLP_KEYS = ("w_fc", "b_fc", "w_proj", "b_proj")
BLOCK_KEYS = ("ln_1.weight", "ln_1.bias", "attn.w_q", "attn.b_q", "attn.w_k", "attn.b_k", "attn.w_v", "attn.b_v",
              "attn.w_o", "attn.b_o", "ln_2.weight", "ln_2.bias", "mlp.w_fc", "mlp.b_fc", "mlp.w_proj", "mlp.b_proj")
GELU_C = math.sqrt(2.0 / math.pi)  # a Python float, so float32 arrays stay float32


# ----------------------------------------------------------------------------------------------
# embedding


def embedding_forward(idx: np.ndarray, table: np.ndarray):
    """Row lookup: token id i becomes row i of the table.

    Shapes: idx (...) ints in [0, V), table (V, C) -> out (..., C), cache
    """
    idx = np.asarray(idx)
    check_ndim("table", table, 2, "(V, C)")
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"idx: expected integer token ids, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        raise InputError(f"idx: expected token ids in [0, {table.shape[0]}), got values in [{idx.min()}, {idx.max()}]")
    return table[idx], (idx, table.shape)


def embedding_backward(dout: np.ndarray, cache) -> np.ndarray:
    """A token that appears n times receives the sum of its n upstream gradients; rows never
    looked up get zero.

    Shapes: dout (..., C) -> dtable (V, C)
    """
    idx, table_shape = cache
    dtable = np.zeros(table_shape, dtype=dout.dtype)
    # out = table[idx]: scatter-add each position's gradient back into its row (np.add.at does not
    # drop repeated indices, which plain fancy-index assignment would).
    np.add.at(dtable, idx.reshape(-1), dout.reshape(-1, table_shape[1]))
    return dtable


def embedding(idx: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Shapes: idx (...) ints in [0, V), table (V, C) -> (..., C)"""
    return embedding_forward(idx, table)[0]


# ----------------------------------------------------------------------------------------------
# layer norm


class LayerNormCache(NamedTuple):
    xhat: np.ndarray  # (..., C) the normalised input, (x - mean) * rstd
    rstd: np.ndarray  # (..., 1) 1 / sqrt(var + eps)
    weight: np.ndarray  # (C,)


def layer_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5):
    """Normalise each vector over its last axis to mean 0, variance 1 (biased variance, as torch),
    then scale and shift per channel.

    Shapes: x (..., C), weight (C,), bias (C,) -> out (..., C), cache
    """
    check_float("x", x)
    check_same("weight", weight.shape[-1], "x's last axis (C)", x.shape[-1], "size")
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = np.mean(np.square(x - mean), axis=-1, keepdims=True)  # (..., 1), biased
    rstd = 1.0 / np.sqrt(var + eps)  # (..., 1)
    xhat = (x - mean) * rstd  # (..., C)
    out = xhat * weight + bias
    return out, LayerNormCache(xhat, rstd, weight)


def layer_norm_backward(dout: np.ndarray, cache):
    """The normalisation couples the C channels of a vector through its mean and variance, which
    is where the two mean terms come from: dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).

    Shapes: dout (..., C) -> dx (..., C), dweight (C,), dbias (C,)
    """
    xhat, rstd, weight = cache
    lead = tuple(range(dout.ndim - 1))
    dbias = dout.sum(axis=lead)  # out = ... + bias
    dweight = (dout * xhat).sum(axis=lead)  # out = xhat * weight
    dxhat = dout * weight  # out = xhat * weight
    # xhat = (x - mean) * rstd, with mean and rstd themselves functions of x:
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dweight, dbias


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Shapes: x (..., C), weight (C,), bias (C,) -> (..., C)"""
    return layer_norm_forward(x, weight, bias, eps)[0]


# ----------------------------------------------------------------------------------------------
# GELU (tanh approximation)


class GeluCache(NamedTuple):
    x: np.ndarray  # the input, any shape
    t: np.ndarray  # tanh(u), same shape


def gelu_forward(x: np.ndarray):
    """GELU(x) = x * Phi(x), in the tanh approximation GPT-2 was trained with (torch:
    F.gelu(x, approximate="tanh"); the exact erf form differs by up to ~5e-4).

    Shapes: any -> same, cache
    """
    # x^3 as x * x * x: NumPy squares x**2 specially, but x**3 goes through a general pow, about
    # 200 times slower on a float32 activation; the products give the same numbers to rounding.
    u = GELU_C * (x + 0.044715 * x * x * x)
    t = np.tanh(u)
    y = 0.5 * x * (1.0 + t)
    return y, GeluCache(x, t)


def gelu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Product rule on y = 0.5 x (1 + tanh(u)):
    dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx,  with t = tanh(u), du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).

    Shapes: dout (same as x) -> dx
    """
    x, t = cache
    du_dx = GELU_C * (1.0 + 3 * 0.044715 * x**2)  # u = c (x + 0.044715 x^3)
    dt_du = 1.0 - t**2  # t = tanh(u)
    dy_dx = 0.5 * (1.0 + t) + 0.5 * x * dt_du * du_dx  # y = 0.5 x (1 + t)
    return dout * dy_dx


def gelu(x: np.ndarray) -> np.ndarray:
    """Shapes: any -> same"""
    return gelu_forward(x)[0]


# ----------------------------------------------------------------------------------------------
# MLP (the feed-forward network)


class MlpCache(NamedTuple):
    x: np.ndarray  # (..., C) the input
    g: np.ndarray  # (..., 4C) gelu(x W_fc^T + b_fc)
    gelu: GeluCache
    w_fc: np.ndarray  # (4C, C)
    w_proj: np.ndarray  # (C, 4C)


def mlp_forward(x: np.ndarray, params: dict):
    """The position-wise feed-forward network: expand to 4C, GELU, project back to C.
    params: w_fc (4C, C), b_fc (4C,), w_proj (C, 4C), b_proj (C,)

    Shapes: x (..., C) -> out (..., C), cache
    """
    missing = [k for k in MLP_KEYS if k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(MLP_KEYS)}, missing {missing}")
    h = linear(x, params["w_fc"], params["b_fc"])  # (..., 4C)
    g, gelu_cache = gelu_forward(h)
    out = linear(g, params["w_proj"], params["b_proj"])  # (..., C)
    return out, MlpCache(x, g, gelu_cache, params["w_fc"], params["w_proj"])


def mlp_backward(dout: np.ndarray, cache):
    """Shapes: dout (..., C) -> dx (..., C), grads {w_fc, b_fc, w_proj, b_proj}"""
    x, g, gelu_cache, w_fc, w_proj = cache
    dg, dw_proj, db_proj = linear_backward(dout, g, w_proj)  # out = g W_proj^T + b_proj
    dh = gelu_backward(dg, gelu_cache)  # g = gelu(h)
    dx, dw_fc, db_fc = linear_backward(dh, x, w_fc)  # h = x W_fc^T + b_fc
    return dx, {"w_fc": dw_fc, "b_fc": db_fc, "w_proj": dw_proj, "b_proj": db_proj}


def mlp(x: np.ndarray, params: dict) -> np.ndarray:
    """Shapes: x (..., C) -> (..., C)"""
    return mlp_forward(x, params)[0]


# ----------------------------------------------------------------------------------------------
# dropout


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None):
    """Inverted dropout: zero each element with probability p and scale survivors by 1/(1-p), so the
    expected value is unchanged and evaluation needs no rescaling. rng=None or p=0 is the identity
    (evaluation mode). The random stream is NumPy's, so masks differ from torch's and JAX's.

    Shapes: any -> same, cache (the scaled keep-mask, or None)
    """
    if not 0.0 <= p < 1.0:
        raise InputError(f"p: expected a probability in [0, 1), got {p!r}")
    if rng is None or p == 0.0:
        return x, None
    scale = np.asarray(1.0 / (1.0 - p), dtype=x.dtype)
    keep = (rng.random(x.shape, dtype=np.float32) >= p) * scale  # bool * scalar -> x.dtype
    return x * keep, keep


def dropout_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Shapes: dout (same as x) -> dx"""
    return dout if cache is None else dout * cache  # out = x * keep


def dropout(x: np.ndarray, p: float, rng: np.random.Generator | None) -> np.ndarray:
    """Shapes: any -> same"""
    return dropout_forward(x, p, rng)[0]


# ----------------------------------------------------------------------------------------------
# the pre-LayerNorm transformer block (GPT-2)


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


class BlockAttention(NamedTuple):
    """An attention plugged into transformer_block_forward in place of the standard one (the course's
    experiments, numpy_impl.gpt_variants): forward(h, params, mask, rng) -> (out, cache) with params
    the layer's `attn.` keys without the prefix, and backward(dout, cache) -> (dh, grads of those keys)."""
    forward: Callable
    backward: Callable


class AttentionCache(NamedTuple):
    """What the standard causal multi-head attention keeps for its backward (D = C / H)."""
    h: np.ndarray  # (B, T, C) the attention's input, ln_1(x)
    w_qkv: np.ndarray  # (3C, C) w_q, w_k, w_v stacked: the three projections are one matmul
    q: np.ndarray  # (B, H, T, D) queries, already multiplied by scale
    k: np.ndarray  # (B, H, T, D)
    v: np.ndarray  # (B, H, T, D)
    scale: float  # 1 / sqrt(D)
    weights: np.ndarray  # (B, H, T, T) softmax weights, 0 on masked keys
    dropped: np.ndarray  # (B, H, T, T) the weights after dropout (the same array without dropout)
    drop: np.ndarray | None  # (B, H, T, T) scaled keep-mask, None without dropout
    merged: np.ndarray  # (B, T, C) the heads' outputs side by side
    w_o: np.ndarray  # (C, C)


class BlockCache(NamedTuple):
    """What transformer_block_forward keeps for transformer_block_backward."""
    ln_1: tuple  # layer_norm_forward's cache of h1 = ln_1(x): xhat (B, T, C), rstd (B, T, 1), weight (C,)
    attn: tuple  # the attention's cache: AttentionCache, or the plugged attention's own
    attention: BlockAttention | None  # the plugged attention, None for the standard one
    drop_1: np.ndarray | None  # (B, T, C) scaled keep-mask on the attention branch, None without dropout
    ln_2: tuple  # layer_norm_forward's cache of h2 = ln_2(x1), as ln_1
    mlp: tuple  # mlp_forward's cache (its input, hidden activations and weights)
    drop_2: np.ndarray | None  # (B, T, C) scaled keep-mask on the MLP branch, None without dropout


def _attention_forward(h, p: dict, n_head: int, mask, dropout: float, rng):
    """Multi-head self-attention softmax(q k^T / sqrt(D), masked) v, dropout on the weights.
    The three projections run as ONE matmul with the stacked weights (torch's in_proj layout): the same
    numbers as three linears, one larger product is faster. Shapes: h (B, T, C) -> (B, T, C), cache"""
    C = h.shape[-1]
    w_qkv = np.concatenate([p["w_q"], p["w_k"], p["w_v"]])  # (3C, C)
    y = linear(h, w_qkv, np.concatenate([p["b_q"], p["b_k"], p["b_v"]]))  # (B, T, 3C)
    q, k, v = (split_heads(y[..., i * C:(i + 1) * C], n_head) for i in range(3))  # (B, H, T, D)
    scale = 1.0 / math.sqrt(q.shape[-1])
    q = q * scale  # (q * scale) k^T = (q k^T) * scale, touching T*D numbers instead of T*T
    weights = attn_softmax(pairwise_similarities(q, k), mask)  # (B, H, T, T)
    dropped, drop = dropout_forward(weights, dropout, rng)
    merged = merge_heads(compute_outputs(dropped, v))  # (B, T, C)
    out = linear(merged, p["w_o"], p["b_o"])
    return out, AttentionCache(h, w_qkv, q, k, v, scale, weights, dropped, drop, merged, p["w_o"])


def _attention_backward(dout, c: AttentionCache):
    """Shapes: dout (B, T, C) -> dh (B, T, C), grads of w_q, b_q, ..., w_o, b_o"""
    g = {}
    dmerged, g["w_o"], g["b_o"] = linear_backward(dout, c.merged, c.w_o)  # out = merged W_o^T + b_o
    dheads = merge_heads_backward(dmerged, c.q.shape[1])  # merged = merge_heads(heads)
    ddropped, dv = compute_outputs_backward(dheads, c.dropped, c.v)  # heads = dropped v
    dscores = attn_softmax_backward(dropout_backward(ddropped, c.drop), c.weights)  # dropped = dropout(softmax(scores))
    dq, dk = pairwise_similarities_backward(dscores, c.q, c.k)  # scores = (q * scale) k^T
    dq *= c.scale
    dy = np.concatenate([split_heads_backward(d) for d in (dq, dk, dv)], axis=-1)  # (B, T, 3C)
    dh, dw, db = linear_backward(dy, c.h, c.w_qkv)  # y = h W_qkv^T + b_qkv
    C = dh.shape[-1]
    for i, n in enumerate("qkv"):
        g[f"w_{n}"], g[f"b_{n}"] = dw[i * C:(i + 1) * C], db[i * C:(i + 1) * C]
    return dh, g


def transformer_block_forward(x: np.ndarray, params: dict, n_head: int, mask: np.ndarray | None = None,
                              dropout: float = 0.0, rng: np.random.Generator | None = None,
                              attention: BlockAttention | None = None):
    """x1 = x + dropout(attn(ln_1(x))); out = x1 + dropout(mlp(ln_2(x1))). Normalising the branch
    inputs, not the stream, leaves an identity path from the loss to every layer, which is why deep
    pre-LN stacks train without warm-up tricks. params: BLOCK_KEYS (a GPT layer's keys without the
    `h.{i}.` prefix). numpy_impl.gpt runs one of these per layer.

    Dropout (probability `dropout`, on the attention weights and on both branches) is on only with an
    rng. `attention` replaces the standard multi-head attention (numpy_impl.gpt_variants plugs the
    course's experiments in here); its weights are then whichever `attn.` keys it reads.

    Shapes: x (B, T, C), mask broadcastable to (B, H, T, T) -> out (B, T, C), BlockCache
    """
    check_ndim("x", x, 3, "(B, T, C)")
    missing = [k for k in BLOCK_KEYS if k not in params and (attention is None or not k.startswith("attn."))]
    if missing:
        raise InputError(f"params: expected keys {list(BLOCK_KEYS)}, missing {missing}")
    h1, ln_1 = layer_norm_forward(x, params["ln_1.weight"], params["ln_1.bias"])
    if attention is None:
        a, attn = _attention_forward(h1, _sub(params, "attn."), n_head, mask, dropout, rng)
    else:
        a, attn = attention.forward(h1, _sub(params, "attn."), mask, rng)
    a, drop_1 = dropout_forward(a, dropout, rng)
    x1 = x + a
    h2, ln_2 = layer_norm_forward(x1, params["ln_2.weight"], params["ln_2.bias"])
    m, mlp_cache = mlp_forward(h2, _sub(params, "mlp."))
    m, drop_2 = dropout_forward(m, dropout, rng)
    return x1 + m, BlockCache(ln_1, attn, attention, drop_1, ln_2, mlp_cache, drop_2)


def transformer_block_backward(dout: np.ndarray, cache: BlockCache):
    """Shapes: dout (B, T, C) -> dx (B, T, C), grads (BLOCK_KEYS, or the plugged attention's keys)"""
    grads = {}
    # out = x1 + dropout(mlp(ln_2(x1))): the residual passes dout straight through, the branch adds to it.
    dh2, g = mlp_backward(dropout_backward(dout, cache.drop_2), cache.mlp)
    grads.update({"mlp." + n: t for n, t in g.items()})
    dx1, grads["ln_2.weight"], grads["ln_2.bias"] = layer_norm_backward(dh2, cache.ln_2)
    dx1 += dout
    # x1 = x + dropout(attn(ln_1(x)))
    da = dropout_backward(dx1, cache.drop_1)
    backward = _attention_backward if cache.attention is None else cache.attention.backward
    dh1, g = backward(da, cache.attn)
    grads.update({"attn." + n: t for n, t in g.items()})
    dx, grads["ln_1.weight"], grads["ln_1.bias"] = layer_norm_backward(dh1, cache.ln_1)  # h1 = ln_1(x)
    dx += dx1
    return dx, grads


def transformer_block(x: np.ndarray, params: dict, n_head: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Shapes: x (B, T, C), mask broadcastable to (B, H, T, T) -> (B, T, C)"""
    return transformer_block_forward(x, params, n_head, mask)[0]
