"""Grouped-query attention in JAX: numpy_impl/gqa.py name for name (read it for the maths).

repeat_kv is jitted with n_rep static; the attention itself is jax_impl.attention's jitted kernel.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from triptych.common.checks import check_ndim, check_positive_int
from triptych.common.backend_checks import check_groups
from jax_impl.attention import scaled_dot_product_attention

__all__ = ["repeat_kv", "grouped_query_attention"]


@partial(jax.jit, static_argnames="n_rep")
def _repeat(x, n_rep):
    return jnp.repeat(x, n_rep, axis=1)  # copies of head g side by side, as HF's repeat_kv


def repeat_kv(x, n_rep: int):
    """Shapes: (B, H_kv, T, D) -> (B, H_kv * n_rep, T, D); head g -> heads g*n_rep .. g*n_rep + n_rep - 1"""
    check_ndim("x", x, 4, "(B, H_kv, T, D)")
    check_positive_int("n_rep", n_rep)
    return _repeat(x, n_rep)


def grouped_query_attention(q, k, v, mask=None, scale: float | None = None, kernel: str = "steps", bias=None):
    """Shapes: q (B, H, T_q, D), k (B, H_kv, T_k, D), v (B, H_kv, T_k, D_v), mask (bool) and bias
    broadcastable to (B, H, T_q, T_k) -> out (B, H, T_q, D_v), weights (B, H, T_q, T_k)"""
    n_rep = check_groups(q, k, v)
    return scaled_dot_product_attention(q, _repeat(k, n_rep), _repeat(v, n_rep), mask, scale, kernel, bias)
