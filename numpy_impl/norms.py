"""RMSNorm, the normalisation of Llama, Mistral, Qwen and Gemma, as a forward/backward pair.

    rms_norm   y = x / sqrt(mean(x^2) + eps) * weight        over the last axis

Unlike layer_norm (numpy_impl/layers.py) nothing is subtracted and there is no bias: only the
vector's scale is normalised, which saves a reduction and works as well in practice (Zhang and
Sennrich 2019). eps sits inside the square root, as in Hugging Face's LlamaRMSNorm and F.rms_norm.

Half-precision inputs (float16) are normalised in float32 and cast back before the weight, as
LlamaRMSNorm does: mean(x^2) of a float16 vector overflows as soon as |x| > 256 (256^2 = 65536 is
beyond float16's largest value, 65504), which would turn every output of that token into 0.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import check_finite, check_float, check_min_ndim, check_ndim, check_same

__all__ = ["rms_norm", "rms_norm_forward", "rms_norm_backward"]
# The (out, cache) forward exists for the hand-written backward; JAX and torch differentiate
# automatically, so they only have rms_norm itself.
__backend_only__ = ["rms_norm_forward"]


def _compute_dtype(dtype) -> np.dtype:
    """float16 -> float32 (see the module docstring); float32 and float64 stay as they are."""
    return np.promote_types(dtype, np.float32)


def rms_norm_forward(x: np.ndarray, weight: np.ndarray, eps: float = 1e-6):
    """Scale each vector to root-mean-square 1, then multiply by a learned per-channel weight.

    Shapes: x (..., C), weight (C,) -> out (..., C), cache
    """
    check_min_ndim("x", x, 1, "(..., C)")
    check_float("x", x)
    check_finite("x", np.isfinite(x).all())
    check_ndim("weight", weight, 1, "(C,)")
    check_same("weight", weight.shape[0], "x's last axis (C)", x.shape[-1], "size")
    xc = x.astype(_compute_dtype(x.dtype), copy=False)
    rrms = 1.0 / np.sqrt(np.mean(np.square(xc), axis=-1, keepdims=True) + eps)  # (..., 1)
    xhat = (xc * rrms).astype(x.dtype, copy=False)  # normalised, back in the input's precision
    return xhat * weight, (xhat, rrms, weight)


def rms_norm_backward(dout: np.ndarray, cache):
    """With r = rrms = 1 / sqrt(mean(x^2) + eps) and xhat = x r: r depends on every channel of its
    vector, dr/dx_j = -x_j r^3 / C, so dx = r * (dxhat - xhat * mean(dxhat * xhat)), the layer-norm
    backward without its mean-subtraction term.

    Shapes: dout (..., C) -> dx (..., C), dweight (C,)
    """
    xhat, rrms, weight = cache
    lead = tuple(range(dout.ndim - 1))
    dweight = (dout * xhat).sum(axis=lead)  # out = xhat * weight
    dxhat = (dout * weight).astype(rrms.dtype, copy=False)  # out = xhat * weight
    xh = xhat.astype(rrms.dtype, copy=False)
    # xhat = x * rrms, rrms = (mean(x^2) + eps)^(-1/2): the product rule plus the shared rrms.
    dx = (dxhat - xh * np.mean(dxhat * xh, axis=-1, keepdims=True)) * rrms
    return dx.astype(dout.dtype, copy=False), dweight


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Shapes: x (..., C), weight (C,) -> (..., C)"""
    return rms_norm_forward(x, weight, eps)[0]
