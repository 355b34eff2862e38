"""The attention experiments' NumPy backward passes (numpy_impl.gpt_variants) against torch autograd, jax.grad
and finite differences. The references are written here with each framework's own ops."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.tolerances import assert_close
from numpy_impl import gpt_variants as ng

F64 = np.float64


def _fd(fn, arrays: dict, G, h=1e-6):
    out = {}
    for name, arr in arrays.items():
        g = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = float(np.sum(fn(**arrays) * G))
            arr[i] = old - h
            down = float(np.sum(fn(**arrays) * G))
            arr[i] = old
            g[i] = (up - down) / (2 * h)
        out[name] = g
    return out


def _compare(ours: dict, arrays: dict, G, np_fn, torch_fn, jax_fn):
    tin = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items()}
    (torch_fn(**tin) * torch.tensor(G)).sum().backward()
    jg = jax.grad(lambda a: jnp.sum(jax_fn(**a) * G))({k: jnp.asarray(v) for k, v in arrays.items()})
    fd = _fd(np_fn, {k: v.copy() for k, v in arrays.items()}, G)
    for k in arrays:
        assert np.all(np.isfinite(ours[k]))
        assert_close(ours[k], tin[k].grad.numpy(), F64, "grad", what=f"d/d{k} vs torch")
        assert_close(ours[k], np.asarray(jg[k]), F64, "grad", what=f"d/d{k} vs jax")
        assert_close(ours[k], fd[k], F64, "finite_difference", what=f"d/d{k} vs finite differences")


def test_neg_sq_distance():
    r = np.random.default_rng(0)
    arrays = {"q": r.standard_normal((2, 2, 3, 4)), "k": r.standard_normal((2, 2, 5, 4))}
    G = r.standard_normal((2, 2, 3, 5))
    dq, dk = ng.neg_sq_distance_backward(G, arrays["q"], arrays["k"], 0.5)
    _compare({"q": dq, "k": dk}, arrays, G,
             lambda q, k: ng.neg_sq_distance_forward(q, k, 0.5),
             lambda q, k: -torch.cdist(q, k) ** 2 * 0.5,
             lambda q, k: -jnp.sum((q[..., :, None, :] - k[..., None, :, :]) ** 2, -1) * 0.5)


def test_cosine_similarity_with_learned_temperature():
    r = np.random.default_rng(1)
    arrays = {"q": r.standard_normal((2, 2, 3, 4)), "k": r.standard_normal((2, 2, 5, 4)),
              "temperature": r.random((2, 1, 1)) * 5 + 1}  # one temperature per head
    G = r.standard_normal((2, 2, 3, 5))
    _, cache = ng.cosine_similarity_forward(**arrays)
    dq, dk, dt = ng.cosine_similarity_backward(G, cache)

    def torch_cos(q, k, temperature):
        return temperature * (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2))

    def jax_cos(q, k, temperature):
        qn = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
        kn = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
        return temperature * (qn @ jnp.swapaxes(kn, -1, -2))

    _compare({"q": dq, "k": dk, "temperature": dt}, arrays, G,
             lambda q, k, temperature: ng.cosine_similarity_forward(q, k, temperature)[0], torch_cos, jax_cos)


@pytest.mark.parametrize("spread", [1.0, 30.0])
def test_aft_simple_causal(spread):
    r = np.random.default_rng(2)
    arrays = {"q": r.standard_normal((2, 5, 3)), "k": r.standard_normal((2, 5, 3)) * spread,
              "v": r.standard_normal((2, 5, 3))}
    G = r.standard_normal((2, 5, 3))
    _, cache = ng.aft_simple_forward(**arrays)
    dq, dk, dv = ng.aft_simple_backward(G, cache)
    T = 5

    def torch_aft(q, k, v):  # the definition, with an explicit causal softmax over time per channel
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        scores = k.transpose(1, 2)[:, :, None, :].expand(-1, -1, T, -1)  # (B, C, t, s) = k_s
        w = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        return torch.sigmoid(q) * torch.einsum("bcts,bsc->btc", w, v)

    def jax_aft(q, k, v):
        causal = jnp.tril(jnp.ones((T, T), dtype=bool))
        scores = jnp.broadcast_to(jnp.swapaxes(k, 1, 2)[:, :, None, :], (k.shape[0], k.shape[2], T, T))
        w = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
        return jax.nn.sigmoid(q) * jnp.einsum("bcts,bsc->btc", w, v)

    _compare({"q": dq, "k": dk, "v": dv}, arrays, G, lambda q, k, v: ng.aft_simple_forward(q, k, v)[0],
             torch_aft, jax_aft)
