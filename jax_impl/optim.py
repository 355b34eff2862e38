"""Gradient clipping and AdamW as pure jitted functions of pytrees (dicts of arrays), with
torch.optim.AdamW's arithmetic (see numpy_impl.optim for the formulas):

    clip:   g <- g * max_norm / (||g|| + 1e-6)   when the global norm exceeds max_norm
    AdamW:  p <- p (1 - lr wd)  (ndim >= 2 only);  m <- lerp(m, g, 1 - b1);  v <- b2 v + (1 - b2) g^2
            p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from triptych.common.checks import InputError

__all__ = ["clip_grad_norm", "adamw_init", "adamw_step"]


@jax.jit
def _global_norm(grads):
    return jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float64))) for g in jax.tree_util.tree_leaves(grads)))


@partial(jax.jit, static_argnums=1)
def _clip(grads, max_norm: float):
    total = _global_norm(grads)
    coef = jnp.where(total > max_norm, max_norm / (total + 1e-6), 1.0)
    return jax.tree_util.tree_map(lambda g: (g * coef.astype(g.dtype)), grads), total


def clip_grad_norm(grads: dict, max_norm: float):
    """Scale all gradients together so their global L2 norm is at most max_norm (torch's rule).

    Shapes: dict of arrays -> (dict, same shapes and dtypes; the norm before clipping, a scalar)
    """
    if not max_norm > 0:
        raise InputError(f"max_norm: expected a positive number, got {max_norm!r}")
    return _clip(grads, float(max_norm))


def adamw_init(params: dict) -> dict:
    """Shapes: params dict -> {"step": 0, "m": zeros like params, "v": zeros like params}"""
    zeros = {k: jnp.zeros_like(p) for k, p in params.items()}
    return {"step": 0, "m": zeros, "v": dict(zeros)}


@partial(jax.jit, static_argnums=(4, 5))
def _update(params, grads, m, v, b1b2eps, decays, step, lr, weight_decay):
    b1, b2, eps = b1b2eps
    step = jnp.asarray(step, jnp.float64)  # traced, so the step count does not recompile
    bias1 = 1.0 - b1 ** step
    bias2_sqrt = jnp.sqrt(1.0 - b2 ** step)
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g, dt = grads[k], p.dtype
        if dict(decays)[k]:
            p = p * (1.0 - lr * weight_decay).astype(dt)  # decoupled decay, matrices only
        mk = m[k] + (g - m[k]) * jnp.asarray(1.0 - b1, dt)
        vk = v[k] * jnp.asarray(b2, dt) + g * g * jnp.asarray(1.0 - b2, dt)
        denom = jnp.sqrt(vk) / bias2_sqrt.astype(dt) + jnp.asarray(eps, dt)
        new_p[k] = p - (lr / bias1).astype(dt) * (mk / denom)
        new_m[k], new_v[k] = mk, vk
    return new_p, new_m, new_v


def adamw_step(params: dict, grads: dict, state: dict, lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
               weight_decay: float = 0.1):
    """One AdamW update (torch.optim.AdamW semantics, decay on ndim >= 2).

    Shapes: params, grads: dicts with the same keys and shapes -> (new params, new state)
    """
    missing = [k for k in params if k not in grads]
    if missing:
        raise InputError(f"grads: expected a gradient for every parameter, missing {missing}")
    step = state["step"] + 1
    decays = tuple(sorted((k, p.ndim >= 2) for k, p in params.items()))
    new_p, m, v = _update(params, grads, state["m"], state["v"], (float(betas[0]), float(betas[1]), float(eps)),
                          decays, step, jnp.asarray(lr, jnp.float64), jnp.asarray(weight_decay, jnp.float64))
    return new_p, {"step": step, "m": m, "v": v}
