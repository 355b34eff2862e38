"""Sampling probabilities in JAX; mirrors numpy_impl/sampling.py name for name (read that for the
filters, their order and HF's tie rules). top_k is static under jit (lax.top_k needs a fixed k), so
each distinct top_k compiles once; temperature and top_p are traced."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from triptych.common.checks import check_finite, check_float, check_min_ndim, check_sampling
from jax_impl._checks import all_finite

__all__ = ["sampling_probs"]


@partial(jax.jit, static_argnames=("top_k", "use_top_p"))
def _sampling_probs(logits, temperature, top_p, top_k, use_top_p):
    scores = logits / jnp.asarray(temperature, logits.dtype)
    if top_k is not None and top_k < scores.shape[-1]:
        kth = jax.lax.top_k(scores, top_k)[0][..., -1:]
        scores = jnp.where(scores < kth, -jnp.inf, scores)
    if use_top_p:
        order = jnp.argsort(scores, axis=-1, stable=True)
        sorted_probs = jax.nn.softmax(jnp.take_along_axis(scores, order, axis=-1), axis=-1)
        drop_sorted = jnp.cumsum(sorted_probs, axis=-1) <= 1 - top_p
        drop_sorted = drop_sorted.at[..., -1].set(False)
        # Back to vocabulary order: the inverse permutation of `order` is argsort(order).
        drop = jnp.take_along_axis(drop_sorted, jnp.argsort(order, axis=-1), axis=-1)
        scores = jnp.where(drop, -jnp.inf, scores)
    return jax.nn.softmax(scores, axis=-1)


def sampling_probs(logits, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """Shapes: logits (..., V) -> probs (..., V), each row summing to 1, in the logits' dtype."""
    check_min_ndim("logits", logits, 1, "(..., V)")
    check_float("logits", logits)
    check_finite("logits", all_finite(logits))
    check_sampling(temperature, top_k, top_p)
    use_top_p = top_p is not None and top_p < 1
    return _sampling_probs(jnp.asarray(logits), temperature, top_p if use_top_p else 1.0, top_k, use_top_p)
