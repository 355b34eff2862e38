"""SiLU and the SwiGLU MLP in JAX; mirrors numpy_impl/swiglu.py name for name (read that for the maths)."""
from __future__ import annotations

import jax

from triptych.common.checks import InputError, check_finite, check_float, check_min_ndim, check_shape
from jax_impl._checks import all_finite

__all__ = ["silu", "swiglu_mlp"]

SWIGLU_KEYS = ("w_gate", "w_up", "w_down")


def silu(x):
    """x * sigmoid(x) (jax.nn.silu). Shapes: any -> same"""
    check_float("x", x)
    return jax.nn.silu(x)


@jax.jit
def _swiglu(x, w_gate, w_up, w_down):
    return (jax.nn.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_mlp(x, params: dict):
    """Shapes: x (..., d), params w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff) -> (..., d)"""
    check_min_ndim("x", x, 1, "(..., d)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    if not isinstance(params, dict) or any(k not in params for k in SWIGLU_KEYS):
        missing = [k for k in SWIGLU_KEYS if not isinstance(params, dict) or k not in params]
        raise InputError(f"params: expected keys {list(SWIGLU_KEYS)}, missing {missing}")
    d = x.shape[-1]
    check_shape("params['w_gate']", params["w_gate"], (None, d))
    d_ff = params["w_gate"].shape[0]
    check_shape("params['w_up']", params["w_up"], (d_ff, d))
    check_shape("params['w_down']", params["w_down"], (d, d_ff))
    return _swiglu(x, params["w_gate"], params["w_up"], params["w_down"])
