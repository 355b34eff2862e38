"""The references of the *_backward exercises: the gradient each backend's own differentiation
takes of its forward (torch autograd on torch tensors, jax.vjp on JAX arrays) on the case's inputs,
so a user's hand-written backward is judged against autodiff, never against our own backward alone.
"""
from __future__ import annotations

import numpy as np


def is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _get(i: dict, path: str):
    for part in path.split("/"):
        i = i[part]
    return i


def _put(i: dict, path: str, value) -> dict:
    """A copy of i with the entry at 'a/b' replaced (the dicts along the path copied, not edited)."""
    head, *rest = path.split("/")
    return {**i, head: _put(i[head], "/".join(rest), value) if rest else value}


def autodiff(m, i: dict, fwd, wrt: tuple[str, ...], cot: str) -> tuple:
    """The vector-Jacobian product of fwd(m, inputs) at the inputs named by `wrt`, along i[cot]:
    torch autograd when the inputs are tensors, jax.vjp when they are JAX arrays."""
    if is_torch(_get(i, wrt[0])):
        import torch
        leaves = [_get(i, k).detach().clone().requires_grad_(True) for k in wrt]
        j = i
        for k, t in zip(wrt, leaves):
            j = _put(j, k, t)
        out = fwd(m, j)
        return tuple(torch.autograd.grad(out, leaves, torch.as_tensor(i[cot], dtype=out.dtype)))
    import jax
    import jax.numpy as jnp

    def f(*xs):
        j = i
        for k, x in zip(wrt, xs):
            j = _put(j, k, x)
        return fwd(m, j)

    out, pull = jax.vjp(f, *[_get(i, k) for k in wrt])
    return tuple(pull(jnp.asarray(i[cot], out.dtype)))


def on_numpy(i: dict, key: str) -> bool:
    return isinstance(_get(i, key), np.ndarray)
