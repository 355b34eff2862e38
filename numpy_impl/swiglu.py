"""SiLU and the SwiGLU feed-forward network of Llama-style models, as forward/backward pairs.

    silu        y = x * sigmoid(x)                                    (also called swish)
    swiglu_mlp  y = (silu(x W_gate^T) * (x W_up^T)) W_down^T          no biases

GPT-2's MLP (numpy_impl/layers.py) is gelu(x W_fc^T + b) W_proj^T. SwiGLU (Shazeer 2020) splits the
first matrix in two: one half goes through the activation and GATES the other, elementwise. With
three matrices instead of two, Llama shrinks d_ff from 4d to about 8d/3 to keep the parameter count.
Parameters: w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff), the rows of Hugging Face's
LlamaMLP gate_proj, up_proj and down_proj weights.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_float
from triptych.common.backend_checks import SWIGLU_KEYS, check_swiglu, numpy_finite_each

__all__ = ["silu", "silu_forward", "silu_backward", "swiglu_mlp", "swiglu_mlp_forward", "swiglu_mlp_backward"]
# The (out, cache) forwards exist for the hand-written backward (JAX and torch differentiate).
__backend_only__ = ["silu_forward", "swiglu_mlp_forward"]



def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) written so that exp only sees -|x| <= 0 and never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def silu_forward(x: np.ndarray):
    """silu(x) = x * sigmoid(x): about x for large x, about 0 for very negative x, smooth between
    (its minimum, -0.278 at x = -1.278, lets a little negative signal through, unlike ReLU).

    Shapes: any -> same, cache
    """
    check_float("x", x)
    s = _sigmoid(x)
    return x * s, (x, s)


def silu_backward(dout: np.ndarray, cache) -> np.ndarray:
    """Product rule with sigmoid' = s (1 - s):  d/dx [x s] = s + x s (1 - s) = s (1 + x (1 - s)).

    Shapes: dout (same as x) -> dx
    """
    x, s = cache
    return dout * s * (1.0 + x * (1.0 - s))  # y = x * s, s = sigmoid(x)


def silu(x: np.ndarray) -> np.ndarray:
    """Shapes: any -> same"""
    return silu_forward(x)[0]


def swiglu_mlp_forward(x: np.ndarray, params: dict):
    """The gated feed-forward network: d -> d_ff (twice, gate and value) -> d.

    Shapes: x (..., d), params w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff) -> out (..., d), cache
    """
    check_swiglu(x, params, numpy_finite_each)
    gate = x @ params["w_gate"].T  # (..., d_ff)
    up = x @ params["w_up"].T  # (..., d_ff)
    act, silu_cache = silu_forward(gate)  # (..., d_ff)
    h = act * up  # the gate: elementwise, per hidden unit
    return h @ params["w_down"].T, (x, up, act, h, silu_cache, params)


def swiglu_mlp_backward(dout: np.ndarray, cache, weights=None):
    """Backward through the three matmuls and the gate; x feeds two of them, so its gradient is the
    sum of the gate path and the up path. weights: the SWIGLU_KEYS whose gradient to form (None: all);
    a frozen weight's dW = dy^T x is a matmul as large as the one for dx, so it is skipped. dx is
    always formed, and a weight's gradient is the same array whichever others are asked for.

    Shapes: dout (..., d) -> dx (..., d), grads {w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff)}
            (the keys in weights only)
    """
    x, up, act, h, silu_cache, params = cache
    want = SWIGLU_KEYS if weights is None else weights
    if not set(want) <= set(SWIGLU_KEYS):
        raise InputError(f"weights: expected names from {list(SWIGLU_KEYS)}, got {sorted(set(want) - set(SWIGLU_KEYS))}")
    d, d_ff = x.shape[-1], up.shape[-1]
    flat = lambda a, n: a.reshape(-1, n)  # noqa: E731  (weights sum over every leading axis)
    grads = {}
    if "w_down" in want:
        grads["w_down"] = flat(dout, d).T @ flat(h, d_ff)  # out = h W_down^T
    dh = dout @ params["w_down"]  # out = h W_down^T
    dact, dup = dh * up, dh * act  # h = act * up
    dgate = silu_backward(dact, silu_cache)  # act = silu(gate)
    if "w_up" in want:
        grads["w_up"] = flat(dup, d_ff).T @ flat(x, d)  # up = x W_up^T
    if "w_gate" in want:
        grads["w_gate"] = flat(dgate, d_ff).T @ flat(x, d)  # gate = x W_gate^T
    dx = dgate @ params["w_gate"] + dup @ params["w_up"]  # x feeds gate and up
    return dx, {k: grads[k] for k in SWIGLU_KEYS if k in grads}


def swiglu_mlp(x: np.ndarray, params: dict) -> np.ndarray:
    """Shapes: x (..., d) -> (..., d)"""
    return swiglu_mlp_forward(x, params)[0]
