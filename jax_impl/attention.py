"""Scaled dot-product attention in JAX: the numpy_impl/attention.py steps, jit-compiled.

Read numpy_impl/attention.py for the maths; this file mirrors it name for name. The public
functions check their inputs in Python (shapes are static under jit) and call jitted kernels.
scaled_dot_product_attention runs the plain jitted steps (_sdpa) unless the caller asks for
kernel="fast": as in numpy_impl, that one branch (_fast_kernel, at the end of the file) imports
jax_impl/flash.py's fast_attention when it runs, never when this file is imported. A caller that
wants speed can equally call jax_impl.flash.fast_attention by name.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from triptych.common.checks import InputError, check_choice, check_finite, check_mask
from triptych.common.backend_checks import check_bias, check_qkv
from jax_impl._checks import all_finite, all_finite_each

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

# As in numpy_impl.attention: the plain jitted steps (_sdpa), or flash.fast_attention.
KERNELS = ("steps", "fast")


def _check_qkv(q, k, v=None, values: bool = True) -> None:
    """common/backend_checks.check_qkv with this backend's value reader (values=False: a caller
    that leaves NaN/inf to flash.fast_attention)."""
    check_qkv(q, k, v, all_finite_each if values else None)


@jax.jit
def _pairwise(q, k):
    return q @ jnp.swapaxes(k, -1, -2)


@jax.custom_jvp
def _softmax_masked_rule(scores, mask):
    masked = scores if mask is None else jnp.where(mask, scores, -jnp.inf)
    row_max = jnp.max(masked, axis=-1, keepdims=True)
    # The shift cancels mathematically; -inf rows shift by 0.
    row_max = jnp.where(jnp.isneginf(row_max), 0.0, row_max)
    e = jnp.exp(masked - row_max)
    denom = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(denom == 0.0, 1.0, denom)


@_softmax_masked_rule.defjvp
def _softmax_masked_jvp(primals, tangents):
    # dy = y (dx - sum(dx y)): masked entries and all-masked rows have y = 0, so their tangent is 0.
    # Differentiating the steps above instead gave XLA:CPU several more passes over (B, H, T, T)
    # under jax.grad (the BERT fine-tuning step ran ~5% slower).
    (scores, mask), (dscores, _) = primals, tangents  # the bool mask has no tangent
    y = _softmax_masked_rule(scores, mask)
    return y, y * (dscores - jnp.sum(dscores * y, axis=-1, keepdims=True))


@jax.jit
def _softmax_masked(scores, mask):
    """Softmax over the last axis where mask allows; all-masked rows -> zeros (no NaN, no NaN grads)."""
    return _softmax_masked_rule(scores, mask)


@jax.jit
def _sdpa(q, k, v, mask, scale, bias=None):
    scores = (q @ jnp.swapaxes(k, -1, -2)) * scale
    if bias is not None:  # None is a static pytree leaf: one compiled version with, one without
        scores = scores + bias.astype(scores.dtype)
    weights = _softmax_masked(scores, mask)
    return weights @ v, weights


def pairwise_similarities(q, k):
    """Shapes: q (..., T_q, D), k (..., T_k, D) -> (..., T_q, T_k)"""
    _check_qkv(q, k)
    return _pairwise(q, k)


def attn_scaled(scores, scale: float):
    """Shapes: (..., T_q, T_k) -> (..., T_q, T_k)"""
    return scores * scale


def softmax(x, axis: int = -1):
    """Numerically stable softmax (jax.nn.softmax subtracts the max too). Shapes: any -> same"""
    check_finite("x", all_finite(x))
    return jax.nn.softmax(x, axis=axis)


def apply_mask(scores, mask):
    """Shapes: scores (..., T_q, T_k), mask broadcastable (bool, True = may attend) -> same"""
    if mask is None:
        return scores
    check_mask("mask", mask, scores.shape)
    return jnp.where(mask, scores, -jnp.inf)


def attn_softmax(scores, mask=None):
    """Shapes: scores (..., T_q, T_k), mask broadcastable (bool) -> weights (..., T_q, T_k)"""
    if mask is not None:
        check_mask("mask", mask, scores.shape)
    return _softmax_masked(scores, mask)


def compute_outputs(weights, v):
    """Shapes: weights (..., T_q, T_k), v (..., T_k, D_v) -> (..., T_q, D_v)"""
    return weights @ v


def _check_bias(bias, expected_shape) -> None:
    check_bias(bias, expected_shape, all_finite_each)


def scaled_dot_product_attention(q, k, v, mask=None, scale: float | None = None, kernel: str = "steps", bias=None):
    """softmax(Q K^T * scale + bias, masked) V; bias (ALiBi's, say) is optional and added after
    scaling, as in numpy_impl. kernel="steps" (the default): the plain jitted steps (_sdpa);
    kernel="fast": jax_impl/flash.py's fast_attention (see _fast_kernel), the same numbers (tested
    equal in parity_tests/test_flash.py). A bias, broadcast leading axes or mixed dtypes run the
    steps either way.

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k), bias broadcastable to (..., T_q, T_k)
            -> out (..., T_q, D_v), weights (..., T_q, T_k)
    """
    check_choice("kernel", kernel, KERNELS)
    _check_qkv(q, k, v, values=False)  # NaN/inf: read once, by whichever kernel runs below
    if mask is not None:
        check_mask("mask", mask, q.shape[:-1] + (k.shape[-2],))
    if bias is not None:
        _check_bias(bias, q.shape[:-1] + (k.shape[-2],))
    if scale is None:
        scale = 1.0 / float(q.shape[-1]) ** 0.5
    if kernel == "fast" and _fast_kernel_fits(q, k, v, bias):
        return _fast_kernel(q, k, v, mask, scale)
    _check_qkv(q, k, v)
    return _sdpa(q, k, v, mask, scale, bias)


def wrong_zero_after_softmax(scores, mask):
    """THE WRONG WAY (see numpy_impl): softmax over all keys, then zero the forbidden weights.

    Shapes: scores (..., T_q, T_k), mask broadcastable (bool) -> weights (..., T_q, T_k)
    """
    if mask is None:
        raise InputError("mask: expected a bool mask (True = may attend), got None")
    check_mask("mask", mask, scores.shape)
    return jax.nn.softmax(scores, axis=-1) * mask


# ------------------------------------------------------------------------------------------------
# kernel="fast": the one way out of this file to a faster kernel, taken only on request.


def _fast_kernel_fits(q, k, v, bias) -> bool:
    """flash.fast_attention takes q, k, v of one dtype with the same leading axes, and no bias."""
    return bias is None and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and q.dtype == k.dtype == v.dtype


def _fast_kernel(q, k, v, mask, scale):
    """jax_impl/flash.py's fast_attention, weights included, imported when asked for.

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v) -> out (..., T_q, D_v), weights (..., T_q, T_k)
    """
    from jax_impl.flash import fast_attention

    return fast_attention(q, k, v, mask, scale, need_weights=True)
