"""Cross-entropy in JAX; mirrors numpy_impl/losses.py (ignored positions, all-ignored -> 0)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.checks import InputError, check_float, check_min_ndim

__all__ = ["cross_entropy"]


@jax.jit
def _cross_entropy(logits, targets, ignore_index):
    keep = targets != ignore_index
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, jnp.where(keep, targets, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(keep, picked, 0.0)) / jnp.maximum(keep.sum(), 1)


def cross_entropy(logits, targets, ignore_index: int = -100):
    """Shapes: logits (..., V), targets (...) ints -> loss (0-d)"""
    check_min_ndim("logits", logits, 2, "(..., V)")
    check_float("logits", logits)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise InputError(f"targets: expected integer class ids, got dtype {targets.dtype}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise InputError(f"targets: expected shape {tuple(logits.shape[:-1])} (logits without V), got {tuple(targets.shape)}")
    if not isinstance(targets, jax.core.Tracer):
        t = np.asarray(targets)
        V = logits.shape[-1]
        bad = (t != ignore_index) & ((t < 0) | (t >= V))
        if bad.any():
            raise InputError(f"targets: expected ids in [0, {V}) or ignore_index={ignore_index}, got {t[bad][0]}")
    return _cross_entropy(logits, targets, ignore_index)
