"""SiLU and the SwiGLU MLP in JAX; mirrors numpy_impl/swiglu.py name for name (read that for the maths)."""
from __future__ import annotations

import jax

from triptych.common.checks import check_float
from triptych.common.backend_checks import check_swiglu
from jax_impl._checks import all_finite_each

__all__ = ["silu", "swiglu_mlp"]



def silu(x):
    """x * sigmoid(x) (jax.nn.silu). Shapes: any -> same"""
    check_float("x", x)
    return jax.nn.silu(x)


@jax.jit
def _swiglu(x, w_gate, w_up, w_down):
    return (jax.nn.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def swiglu_mlp(x, params: dict):
    """Shapes: x (..., d), params w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff) -> (..., d)"""
    check_swiglu(x, params, all_finite_each)
    return _swiglu(x, params["w_gate"], params["w_up"], params["w_down"])
