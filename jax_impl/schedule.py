"""Linear warmup, cosine decay, floor: numpy_impl/schedule.py's formula (read it) in jax.numpy.

    it < Tw: it / Tw * max;  Tw <= it <= Tc: min + (1 + cos(pi (it-Tw)/(Tc-Tw))) / 2 (max - min);  after: min
"""
from __future__ import annotations

import jax.numpy as jnp

from triptych.common.checks import InputError
from triptych.common.checks import check_schedule

__all__ = ["lr_cosine_schedule"]


def lr_cosine_schedule(it, max_learning_rate: float, min_learning_rate: float, warmup_iters: int,
                       cosine_cycle_iters: int):
    """Shapes: it any (integers >= 0) -> same, float64"""
    check_schedule(max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters)
    it = jnp.asarray(it, dtype=jnp.float64)
    if not bool(jnp.all(it >= 0)):
        raise InputError(f"it: expected steps >= 0, got {float(it.min())!r}")
    warm = it / max(warmup_iters, 1) * max_learning_rate
    progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)
    cosine = min_learning_rate + 0.5 * (1.0 + jnp.cos(jnp.pi * progress)) * (max_learning_rate - min_learning_rate)
    return jnp.where(it < warmup_iters, warm, jnp.where(it <= cosine_cycle_iters, cosine, min_learning_rate))
