"""Scaled dot-product attention, one step per function, in plain NumPy.

    scores  = Q K^T                      pairwise_similarities      (..., T_q, T_k)
    scaled  = scores * scale             attn_scaled                scale = 1/sqrt(d_head) by default
    masked  = where(mask, scaled, -inf)  apply_mask                 mask: bool, True = may attend
    weights = softmax(masked, keys)      attn_softmax               fully masked row -> all zeros
    out     = weights V                  compute_outputs            (..., T_q, D_v)

Leading axes (batch, heads, ...) are carried through untouched, so the same functions serve
single-head, multi-head and batched calls.

scaled_dot_product_attention runs these four steps by default (kernel="steps"): the file computes
what it reads, in the form it is read, and importing it loads nothing else of this project's
maths. Speed lives in named kernels of their own: numpy_impl/flash.py (fast_attention, the same
numbers in cache-sized blocks on every core; flash_attention, tiled with the online softmax) and
numpy_impl/fast.py (in-place forms of the softmax, GELU and LayerNorm). A caller that wants speed
calls them by name, or passes kernel="fast" here: that one branch (_fast_kernel, at the end of
the file) imports numpy_impl.flash when it runs, never when this file is imported.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.common.checks import (
    InputError,
    check_choice,
    check_finite,
    check_mask,
)
from triptych.common.backend_checks import check_bias, check_qkv, numpy_finite_each

__all__ = [
    "pairwise_similarities",
    "attn_scaled",
    "softmax",
    "apply_mask",
    "attn_softmax",
    "compute_outputs",
    "scaled_dot_product_attention",
    "wrong_zero_after_softmax",
]
# Hand-written backward passes (NumPy only: JAX and torch differentiate automatically). Each takes
# the upstream gradient plus the forward's inputs/outputs it needs, and returns fresh gradients.
__all__ += [
    "pairwise_similarities_backward",
    "attn_scaled_backward",
    "softmax_backward",
    "attn_softmax_backward",
    "compute_outputs_backward",
    "scaled_dot_product_attention_backward",
    "wrong_zero_after_softmax_backward",
]

# scaled_dot_product_attention's `kernel` argument: the four readable steps, or flash.fast_attention
# (see _fast_kernel).
KERNELS = ("steps", "fast")


def _check_qkv(q, k, v=None, values: bool = True) -> None:
    """common/backend_checks.check_qkv with this backend's value reader (values=False: a caller
    that leaves NaN/inf to flash.fast_attention)."""
    check_qkv(q, k, v, numpy_finite_each if values else None)


def _check_bias(bias, expected_shape) -> None:
    check_bias(bias, expected_shape, numpy_finite_each)


def pairwise_similarities(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Dot product of every query with every key.

    Shapes: q (..., T_q, D), k (..., T_k, D) -> (..., T_q, T_k)
    """
    _check_qkv(q, k)
    return q @ np.swapaxes(k, -1, -2)


def pairwise_similarities_backward(dscores: np.ndarray, q: np.ndarray, k: np.ndarray):
    """scores = q k^T, so dq = dscores k and dk = dscores^T q.

    Shapes: dscores (..., T_q, T_k), q (..., T_q, D), k (..., T_k, D) -> dq (..., T_q, D), dk (..., T_k, D)
    """
    return dscores @ k, np.swapaxes(dscores, -1, -2) @ q


def attn_scaled(scores: np.ndarray, scale: float) -> np.ndarray:
    """Multiply scores by `scale` (1/sqrt(d_head) in the paper) so their variance stays ~1
    whatever the head size, keeping the softmax out of its saturated, zero-gradient regime.

    Shapes: (..., T_q, T_k) -> (..., T_q, T_k)
    """
    return scores * scale


def attn_scaled_backward(dscaled: np.ndarray, scale: float) -> np.ndarray:
    """scaled = scores * scale. Shapes: (..., T_q, T_k) -> (..., T_q, T_k)"""
    return dscaled * scale


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: subtracting the max leaves the result unchanged (it cancels in
    the ratio) but keeps exp() from overflowing, so logits of 1e6 work.

    Shapes: any -> same
    """
    check_finite("x", np.isfinite(x).all())
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def softmax_backward(dy: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """The softmax Jacobian is diag(y) - y y^T, so the vector-Jacobian product needs only the
    output y:  dx = y * (dy - sum(dy * y)). Never form the (T, T) Jacobian per row.

    Shapes: dy, y (any, same) -> dx (same)
    """
    return y * (dy - np.sum(dy * y, axis=axis, keepdims=True))


def apply_mask(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Set scores of forbidden (query, key) pairs to -inf, so exp() makes their weight exactly 0.
    A finite constant such as -1e9 would leave a tiny weight a model could learn to exploit.

    Shapes: scores (..., T_q, T_k), mask broadcastable to it (bool, True = may attend) -> same
    """
    if mask is None:
        return scores
    check_mask("mask", mask, scores.shape)
    return np.where(mask, scores, -np.inf)


def attn_softmax(scores: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax over keys with masking; a query that may attend to nothing gets all-zero weights.

    Shapes: scores (..., T_q, T_k), mask broadcastable (bool) -> weights (..., T_q, T_k)
    """
    masked = apply_mask(scores, mask)
    row_max = np.max(masked, axis=-1, keepdims=True)
    # A fully masked row has max = -inf and (-inf) - (-inf) = NaN; shift such rows by 0 instead.
    row_max = np.where(np.isneginf(row_max), 0.0, row_max)
    e = np.exp(masked - row_max)  # exp(-inf) = 0 for masked entries
    denom = np.sum(e, axis=-1, keepdims=True)
    # An all-masked row sums to 0: divide by 1 so its weights stay 0 rather than 0/0.
    return e / np.where(denom == 0.0, 1.0, denom)


def attn_softmax_backward(dweights: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The softmax backward over keys. Masking needs no step of its own: a masked key has weight
    exactly 0, so y * (...) gives it a zero gradient, and a fully masked row (all weights 0) gets an
    all-zero gradient, never NaN. Its input, the masked scores, held -inf there; that -inf is never
    touched here.

    Shapes: dweights, weights (..., T_q, T_k) -> dscores (..., T_q, T_k)
    """
    return softmax_backward(dweights, weights, axis=-1)


def compute_outputs(weights: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Each output row is the weights-average of the value rows.

    Shapes: weights (..., T_q, T_k), v (..., T_k, D_v) -> (..., T_q, D_v)
    """
    return weights @ v


def compute_outputs_backward(dout: np.ndarray, weights: np.ndarray, v: np.ndarray):
    """out = weights v, so dweights = dout v^T and dv = weights^T dout.

    Shapes: dout (..., T_q, D_v), weights (..., T_q, T_k), v (..., T_k, D_v)
            -> dweights (..., T_q, T_k), dv (..., T_k, D_v)
    """
    return dout @ np.swapaxes(v, -1, -2), np.swapaxes(weights, -1, -2) @ dout


def scaled_dot_product_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    scale: float | None = None,
    kernel: str = "steps",
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(Q K^T * scale + bias, masked) V.

    bias (optional) is an additive score bias, ALiBi's per-head distance penalty for instance
    (masks.alibi_bias). It is added after scaling, where torch SDPA adds a float attn_mask, and it
    carries no gradient: the backward below is unchanged because `weights` already include it.

    kernel="steps" (the default) runs the four steps above in order. kernel="fast" asks for
    numpy_impl/flash.py's fast_attention (see _fast_kernel): the same numbers (tested equal in
    parity_tests/test_flash.py) in cache-sized blocks on every core. It needs q, k and v with the
    same leading axes and dtype and no bias; otherwise (shared keys, say) the steps run either way.

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k), bias broadcastable to (..., T_q, T_k)
            -> out (..., T_q, D_v), weights (..., T_q, T_k)
    """
    check_choice("kernel", kernel, KERNELS)
    _check_qkv(q, k, v, values=False)  # NaN/inf: read once, by whichever kernel runs below
    if bias is not None:
        _check_bias(bias, q.shape[:-1] + (k.shape[-2],))
    if scale is None:
        # A Python float, not np.float64: NumPy 2 would promote float32 inputs to float64.
        scale = 1.0 / math.sqrt(q.shape[-1])
    if kernel == "fast" and _fast_kernel_fits(q, k, v, bias):
        return _fast_kernel(q, k, v, mask, scale)
    _check_qkv(q, k, v)
    scores = attn_scaled(pairwise_similarities(q, k), scale)
    if bias is not None:
        # In the scores' dtype, as torch SDPA demands of a float attn_mask (float32 stays float32).
        scores = scores + bias.astype(scores.dtype, copy=False)
    weights = attn_softmax(scores, mask)
    return compute_outputs(weights, v), weights


def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale: float | None = None):
    """Gradients of scaled_dot_product_attention with respect to q, k and v, walking its four steps
    in reverse. `weights` is the forward's second output; it already carries the mask (zeros where
    masked), so the mask itself is not needed.

    Shapes: dout (..., T_q, D_v), q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v),
            weights (..., T_q, T_k) -> dq (..., T_q, D), dk (..., T_k, D), dv (..., T_k, D_v)
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    dweights, dv = compute_outputs_backward(dout, weights, v)  # out = weights v
    dscaled = attn_softmax_backward(dweights, weights)  # weights = attn_softmax(scaled, mask)
    dscores = attn_scaled_backward(dscaled, scale)  # scaled = scores * scale
    dq, dk = pairwise_similarities_backward(dscores, q, k)  # scores = q k^T
    return dq, dk, dv


def wrong_zero_after_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """THE WRONG WAY, kept for teaching: softmax over ALL keys, then zero the forbidden weights.

    The forbidden keys still took part in the normalisation, so the surviving weights no longer
    sum to 1, and during training the scores of future tokens still shape the denominator:
    information about the future leaks into every position. Compare attn_softmax.

    Shapes: scores (..., T_q, T_k), mask broadcastable (bool) -> weights (..., T_q, T_k)
    """
    if mask is None:
        raise InputError("mask: expected a bool mask (True = may attend), got None")
    check_mask("mask", mask, scores.shape)
    return softmax(scores, axis=-1) * mask


def wrong_zero_after_softmax_backward(dweights: np.ndarray, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Backward of the wrong way. Its gradient shows the leak: a forbidden key's score gets a
    non-zero gradient (through the shared denominator), so training pushes on future positions.

    Shapes: dweights, scores (..., T_q, T_k), mask broadcastable (bool) -> dscores (..., T_q, T_k)
    """
    p = softmax(scores, axis=-1)  # recomputed: the forward's output lost p where mask is False
    return softmax_backward(dweights * mask, p)  # weights = p * mask, then p = softmax(scores)


# ------------------------------------------------------------------------------------------------
# kernel="fast": the one way out of this file to a faster kernel, taken only on request.


def _fast_kernel_fits(q, k, v, bias) -> bool:
    """flash.fast_attention takes q, k, v of one dtype with the same leading axes, and no bias."""
    return bias is None and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and q.dtype == k.dtype == v.dtype


def _fast_kernel(q, k, v, mask, scale):
    """numpy_impl/flash.py's fast_attention, weights included. Imported here, when asked for, so
    importing this file never loads flash.py (or its thread pool and threadpoolctl).

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v) -> out (..., T_q, D_v), weights (..., T_q, T_k)
    """
    from numpy_impl.flash import fast_attention

    return fast_attention(q, k, v, mask, scale, need_weights=True)
