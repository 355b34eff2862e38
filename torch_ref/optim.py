"""Gradient clipping and AdamW by torch itself (torch.nn.utils.clip_grad_norm_, torch.optim.AdamW), on
plain dicts of arrays: the referee for numpy_impl.optim and jax_impl.optim.

Weight decay applies to tensors with ndim >= 2 (embeddings and projection matrices), nanoGPT's rule,
through two AdamW parameter groups. The state dict {"step", "m", "v"} is the same in all backends.
"""
from __future__ import annotations

import numpy as np
import torch

from triptych.common.checks import InputError

__all__ = ["clip_grad_norm", "adamw_init", "adamw_step", "make_adamw", "adamw_state_to_dict", "adamw_state_from_dict"]
# the stateful torch.optim.AdamW and its state conversion exist for torch only
__backend_only__ = ["make_adamw", "adamw_state_to_dict", "adamw_state_from_dict"]


def _t(x) -> torch.Tensor:
    return x.detach().clone() if isinstance(x, torch.Tensor) else torch.tensor(np.asarray(x))


def clip_grad_norm(grads: dict, max_norm: float) -> tuple[dict, float]:
    """torch.nn.utils.clip_grad_norm_ on a dict of gradients (returns copies).

    Shapes: dict of arrays -> (dict of NumPy arrays, same shapes; the global norm before clipping)
    """
    if not max_norm > 0:
        raise InputError(f"max_norm: expected a positive number, got {max_norm!r}")
    holders = {k: torch.zeros(0) for k in grads}
    for k, g in grads.items():
        holders[k] = torch.nn.Parameter(torch.zeros_like(_t(g)))
        holders[k].grad = _t(g)
    total = torch.nn.utils.clip_grad_norm_(list(holders.values()), max_norm)
    return {k: h.grad.numpy() for k, h in holders.items()}, float(total)


def make_adamw(params: dict, lr: float, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.1):
    """torch.optim.AdamW over a dict of leaf tensors: decay on ndim >= 2, none on biases / gains."""
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps, foreach=False)


def adamw_state_to_dict(opt: torch.optim.Optimizer, params: dict) -> dict:
    """torch's per-tensor state -> {"step": int, "m": {name: array}, "v": {name: array}}."""
    m, v, step = {}, {}, 0
    for k, p in params.items():
        st = opt.state.get(p, {})
        m[k] = st["exp_avg"].numpy().copy() if st else np.zeros(tuple(p.shape), dtype=p.detach().numpy().dtype)
        v[k] = st["exp_avg_sq"].numpy().copy() if st else np.zeros_like(m[k])
        step = int(st["step"]) if st else step
    return {"step": step, "m": m, "v": v}


def adamw_state_from_dict(opt: torch.optim.Optimizer, params: dict, state: dict) -> None:
    """Load {"step", "m", "v"} into torch.optim.AdamW (nothing to load at step 0)."""
    if state["step"] == 0:
        return
    for k, p in params.items():
        opt.state[p] = {"step": torch.tensor(float(state["step"])), "exp_avg": _t(state["m"][k]).to(p.dtype),
                        "exp_avg_sq": _t(state["v"][k]).to(p.dtype)}


def adamw_init(params: dict) -> dict:
    """Zero moments, step 0. Shapes: params dict -> {"step": 0, "m": {...}, "v": {...}}"""
    return {"step": 0, "m": {k: np.zeros_like(np.asarray(p)) for k, p in params.items()},
            "v": {k: np.zeros_like(np.asarray(p)) for k, p in params.items()}}


def adamw_step(params: dict, grads: dict, state: dict, lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
               weight_decay: float = 0.1) -> tuple[dict, dict]:
    """One torch.optim.AdamW step on copies of params. Shapes: dicts of arrays -> (new params, new state)"""
    missing = [k for k in params if k not in grads]
    if missing:
        raise InputError(f"grads: expected a gradient for every parameter, missing {missing}")
    p = {k: torch.nn.Parameter(_t(v)) for k, v in params.items()}
    opt = make_adamw(p, lr, betas, eps, weight_decay)
    adamw_state_from_dict(opt, p, state)
    for k, t in p.items():
        t.grad = _t(grads[k]).to(t.dtype)
    opt.step()
    return {k: t.detach().numpy().copy() for k, t in p.items()}, adamw_state_to_dict(opt, p)
