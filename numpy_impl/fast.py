"""Fast forms of readable steps: the same numbers as numpy_impl/attention.py's attn_softmax and
numpy_impl/layers.py's GELU and LayerNorm, computed in place.

The readable files compute each formula as it is written, one temporary array per operation. On
the largest activations of a GPT step, the (B, H, T, T) attention weights and the (B, T, 4C) MLP
hidden layer, each temporary is a full pass over memory, so these versions reuse buffers instead:
same names, same arguments, same caches, so a caller swaps `layers.gelu_forward` for
`fast.gelu_forward` and keeps everything else (parity_tests/test_fast_kernels.py checks that the
two agree, values and gradients). Attention itself has its blocked kernel in numpy_impl/flash.py.

Nothing in the readable files imports this module: speed is asked for by name.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.common.checks import check_float, check_same
from numpy_impl.attention import apply_mask
from numpy_impl.layers import GeluCache, LayerNormCache

__all__ = ["attn_softmax", "gelu_forward", "gelu_backward", "layer_norm_forward", "layer_norm_backward"]

GELU_C = math.sqrt(2.0 / math.pi)  # a Python float, so float32 arrays stay float32


def attn_softmax(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """attention.attn_softmax, in place on apply_mask's fresh array (never the caller's scores).

    Shapes: scores (..., T_q, T_k), mask broadcastable (bool) -> weights (..., T_q, T_k)
    """
    masked = apply_mask(scores, mask)
    row_max = np.max(masked, axis=-1, keepdims=True)
    row_max[np.isneginf(row_max)] = 0.0  # fully masked row: shift by 0, not -inf - -inf = NaN
    e = np.subtract(masked, row_max, out=None if masked is scores else masked)
    np.exp(e, out=e)
    denom = np.sum(e, axis=-1, keepdims=True)
    denom[denom == 0.0] = 1.0  # fully masked row: weights stay 0 instead of 0/0
    e /= denom
    return e


def gelu_forward(x: np.ndarray):
    """layers.gelu_forward, y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), one buffer for u
    and t = tanh(u), one for y.

    Shapes: any -> same, cache (x, t)
    """
    t = x * x
    t *= 0.044715
    t += 1.0
    t *= x
    t *= GELU_C  # u = c (x + 0.044715 x^3)
    np.tanh(t, out=t)  # t = tanh(u)
    y = t + 1.0
    y *= x
    y *= 0.5  # y = 0.5 x (1 + t)
    return y, GeluCache(x, t)


def gelu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """layers.gelu_backward: dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, in two buffers.

    Shapes: dout (same as x) -> dx
    """
    x, t = cache
    du_dx = x * x
    du_dx *= 3 * 0.044715
    du_dx += 1.0
    du_dx *= GELU_C  # u = c (x + 0.044715 x^3)  ->  du/dx = c (1 + 3 * 0.044715 x^2)
    dt = t * t
    np.subtract(1.0, dt, out=dt)  # t = tanh(u)  ->  dt/du = 1 - t^2
    dt *= du_dx
    dt *= x
    dt += t
    dt += 1.0
    dt *= 0.5  # y = 0.5 x (1 + t)  ->  dy/dx = 0.5 (1 + t) + 0.5 x dt/dx
    dt *= dout
    return dt


def layer_norm_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5):
    """layers.layer_norm_forward, normalising in the centred copy of x.

    Shapes: x (..., C), weight (C,), bias (C,) -> out (..., C), cache (xhat, rstd, weight)
    """
    check_float("x", x)
    check_same("weight", weight.shape[-1], "x's last axis (C)", x.shape[-1], "size")
    xhat = x - x.mean(axis=-1, keepdims=True)
    var = np.mean(np.square(xhat), axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat *= rstd
    out = xhat * weight
    out += bias
    return out, LayerNormCache(xhat, rstd, weight)


def layer_norm_backward(dout: np.ndarray, cache):
    """layers.layer_norm_backward: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), in one buffer.

    Shapes: dout (..., C) -> dx (..., C), dweight (C,), dbias (C,)
    """
    xhat, rstd, weight = cache
    lead = tuple(range(dout.ndim - 1))
    dbias = dout.sum(axis=lead)
    dweight = (dout * xhat).sum(axis=lead)
    dxhat = dout * weight
    dx = dxhat - dxhat.mean(axis=-1, keepdims=True)
    dx -= xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True)
    dx *= rstd
    return dx, dweight, dbias
