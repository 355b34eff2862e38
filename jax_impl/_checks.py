"""JAX-side helpers for the shared input checks.

Shape and dtype checks work on traced arrays too, but reading values (is everything finite?) needs a
concrete array: inside someone else's jit the value check is skipped, outside it runs on device."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def all_finite(x) -> bool:
    if isinstance(x, jax.core.Tracer):
        return True
    return bool(jnp.isfinite(x).all())


def is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)
