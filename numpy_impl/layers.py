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
"""
from __future__ import annotations

import math

import numpy as np

from triptych.common.checks import InputError, check_float, check_ndim, check_same
from numpy_impl.attention import (
    attn_scaled,
    attn_scaled_backward,
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
    return out, (xhat, rstd, weight)


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


def gelu_forward(x: np.ndarray):
    """GELU(x) = x * Phi(x), in the tanh approximation GPT-2 was trained with (torch:
    F.gelu(x, approximate="tanh"); the exact erf form differs by up to ~5e-4).

    Shapes: any -> same, cache
    """
    u = GELU_C * (x + 0.044715 * x**3)
    t = np.tanh(u)
    y = 0.5 * x * (1.0 + t)
    return y, (x, t)


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
    return out, (x, g, gelu_cache, params["w_fc"], params["w_proj"])


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


def transformer_block_forward(x: np.ndarray, params: dict, n_head: int, mask: np.ndarray | None = None):
    """x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)). Normalising the branch inputs, not the stream,
    leaves an identity path from the loss to every layer, which is why deep pre-LN stacks train
    without warm-up tricks. params: BLOCK_KEYS (a GPT layer's keys without the `h.{i}.` prefix).

    This is the plain block (multi-head attention as in numpy_impl.multihead, no dropout);
    numpy_impl.gpt builds its blocks from the same pieces plus RoPE, dropout and the experiments.

    Shapes: x (B, T, C), mask broadcastable to (B, H, T, T) -> out (B, T, C), cache
    """
    check_ndim("x", x, 3, "(B, T, C)")
    missing = [k for k in BLOCK_KEYS if k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(BLOCK_KEYS)}, missing {missing}")
    attn = _sub(params, "attn.")
    h1, ln1_cache = layer_norm_forward(x, params["ln_1.weight"], params["ln_1.bias"])
    q = split_heads(linear(h1, attn["w_q"], attn["b_q"]), n_head)  # (B, H, T, D)
    k = split_heads(linear(h1, attn["w_k"], attn["b_k"]), n_head)
    v = split_heads(linear(h1, attn["w_v"], attn["b_v"]), n_head)
    scale = 1.0 / math.sqrt(q.shape[-1])
    weights = attn_softmax(attn_scaled(pairwise_similarities(q, k), scale), mask)  # (B, H, T, T)
    merged = merge_heads(compute_outputs(weights, v))  # (B, T, C)
    x1 = x + linear(merged, attn["w_o"], attn["b_o"])
    h2, ln2_cache = layer_norm_forward(x1, params["ln_2.weight"], params["ln_2.bias"])
    m, mlp_cache = mlp_forward(h2, _sub(params, "mlp."))
    out = x1 + m
    return out, (h1, ln1_cache, q, k, v, weights, scale, merged, attn, ln2_cache, mlp_cache)


def transformer_block_backward(dout: np.ndarray, cache):
    """Shapes: dout (B, T, C) -> dx (B, T, C), grads (BLOCK_KEYS)"""
    h1, ln1_cache, q, k, v, weights, scale, merged, attn, ln2_cache, mlp_cache = cache
    n_head = q.shape[1]
    grads = {}
    # out = x1 + mlp(ln_2(x1)): the residual passes dout straight through, the branch adds to it.
    dh2, g = mlp_backward(dout, mlp_cache)
    grads.update({"mlp." + n: t for n, t in g.items()})
    dx1_branch, grads["ln_2.weight"], grads["ln_2.bias"] = layer_norm_backward(dh2, ln2_cache)
    dx1 = dout + dx1_branch
    # x1 = x + merged W_o^T + b_o
    dmerged, grads["attn.w_o"], grads["attn.b_o"] = linear_backward(dx1, merged, attn["w_o"])
    dheads = merge_heads_backward(dmerged, n_head)  # merged = merge_heads(heads)
    dweights, dv = compute_outputs_backward(dheads, weights, v)  # heads = weights v
    dscores = attn_scaled_backward(attn_softmax_backward(dweights, weights), scale)  # weights = softmax(scores * scale)
    dq, dk = pairwise_similarities_backward(dscores, q, k)  # scores = q k^T
    dh1 = np.zeros_like(h1)
    for name, d in (("q", dq), ("k", dk), ("v", dv)):  # q, k, v = split_heads(h1 W^T + b)
        dh, grads[f"attn.w_{name}"], grads[f"attn.b_{name}"] = linear_backward(split_heads_backward(d), h1, attn[f"w_{name}"])
        dh1 += dh
    dx_branch, grads["ln_1.weight"], grads["ln_1.bias"] = layer_norm_backward(dh1, ln1_cache)  # h1 = ln_1(x)
    return dx1 + dx_branch, {k: grads[k] for k in BLOCK_KEYS}


def transformer_block(x: np.ndarray, params: dict, n_head: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Shapes: x (B, T, C), mask broadcastable to (B, H, T, T) -> (B, T, C)"""
    return transformer_block_forward(x, params, n_head, mask)[0]
