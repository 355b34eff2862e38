"""Gradient clipping and AdamW on plain dicts of arrays, with torch's exact semantics.

    clip:   g <- g * max_norm / (||g|| + 1e-6)   when the global norm ||g|| exceeds max_norm
    AdamW:  p <- p - lr * wd * p                 decoupled weight decay (matrices only, nanoGPT's rule)
            m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
            p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

The arithmetic follows torch.optim.AdamW's single-tensor path step for step, so float64 runs agree
to rounding. Functions return fresh dicts; nothing is updated in place.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.common.checks import InputError

__all__ = ["clip_grad_norm", "adamw_init", "adamw_step"]


def _decays(name: str, value) -> bool:
    """Weight decay applies to matrices (embeddings, projection weights), not to biases or LayerNorm
    gains: shrinking a gain toward 0 would fight the normalisation. nanoGPT's rule: ndim >= 2."""
    return len(value.shape) >= 2


def clip_grad_norm(grads: dict, max_norm: float) -> tuple[dict, float]:
    """Scale all gradients together so their global L2 norm is at most max_norm (torch's
    clip_grad_norm_: coefficient max_norm / (norm + 1e-6)). The norm is accumulated in float64.

    Shapes: dict of arrays -> (dict of arrays, same shapes and dtypes; the norm before clipping)
    """
    if not max_norm > 0:
        raise InputError(f"max_norm: expected a positive number, got {max_norm!r}")
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    if total <= max_norm:
        return dict(grads), total
    coef = max_norm / (total + 1e-6)
    return {k: (g * np.asarray(coef, dtype=g.dtype)) for k, g in grads.items()}, total


def adamw_init(params: dict) -> dict:
    """Zero first and second moments for every parameter, step 0.

    Shapes: params dict -> {"step": 0, "m": {name: zeros like param}, "v": {...}}
    """
    return {"step": 0, "m": {k: np.zeros_like(p) for k, p in params.items()},
            "v": {k: np.zeros_like(p) for k, p in params.items()}}


def adamw_step(params: dict, grads: dict, state: dict, lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
               weight_decay: float = 0.1) -> tuple[dict, dict]:
    """One AdamW update of every parameter (torch.optim.AdamW semantics, decay only where `_decays`).

    Shapes: params, grads: dicts with the same keys and shapes -> (new params, new state)
    """
    missing = [k for k in params if k not in grads]
    if missing:
        raise InputError(f"grads: expected a gradient for every parameter, missing {missing}")
    b1, b2 = betas
    step = state["step"] + 1
    bias1 = 1.0 - b1 ** step  # m starts at 0, so early averages are too small by this factor
    bias2_sqrt = math.sqrt(1.0 - b2 ** step)
    step_size = lr / bias1
    new_params, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g, dt = grads[k], p.dtype
        if weight_decay and _decays(k, p):
            p = p * np.asarray(1.0 - lr * weight_decay, dtype=dt)  # decoupled: shrink p, not g
        m = state["m"][k] + (g - state["m"][k]) * np.asarray(1.0 - b1, dtype=dt)  # torch's lerp_
        v = state["v"][k] * np.asarray(b2, dtype=dt) + g * g * np.asarray(1.0 - b2, dtype=dt)
        denom = np.sqrt(v) / np.asarray(bias2_sqrt, dtype=dt) + np.asarray(eps, dtype=dt)
        new_params[k] = p - np.asarray(step_size, dtype=dt) * (m / denom)
        new_m[k], new_v[k] = m, v
    return new_params, {"step": step, "m": new_m, "v": new_v}
