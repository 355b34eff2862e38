"""RMSNorm in JAX; mirrors numpy_impl/norms.py name for name (read that for the maths and for why
half-precision inputs are normalised in float32)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from triptych.common.checks import check_finite, check_float, check_min_ndim, check_ndim, check_same
from jax_impl._checks import all_finite

__all__ = ["rms_norm"]


@jax.jit
def _rms_norm(x, weight, eps):
    xc = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    xhat = xc * jax.lax.rsqrt(jnp.mean(jnp.square(xc), axis=-1, keepdims=True) + eps)
    return xhat.astype(x.dtype) * weight


def rms_norm(x, weight, eps: float = 1e-6):
    """Shapes: x (..., C), weight (C,) -> (..., C)"""
    check_min_ndim("x", x, 1, "(..., C)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    check_ndim("weight", weight, 1, "(C,)")
    check_same("weight", weight.shape[0], "x's last axis (C)", x.shape[-1], "size")
    return _rms_norm(x, weight, eps)
