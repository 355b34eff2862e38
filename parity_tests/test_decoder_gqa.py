"""Grouped-query attention and attention's additive `bias`, against torch and HF.

References: torch SDPA with enable_gqa=True (through torch_ref.gqa), HF Llama's repeat_kv followed by
plain torch SDPA, torch.repeat_interleave; gradients against torch autograd, jax.grad and central
finite differences. Hypothesis sweeps batch, heads, groupings (MQA, GQA, MHA), lengths and masks.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.tolerances import assert_close, tolerance
from jax_impl import attention as ja, gqa as jg
from numpy_impl import attention as na, gqa as ng
from torch_ref import attention as ta, gqa as tg

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T = torch.from_numpy


def _problem(rng, b=2, h=6, h_kv=2, t_q=5, t_k=7, d=4, d_v=3, dtype=np.float64):
    q = rng.standard_normal((b, h, t_q, d)).astype(dtype)
    k = rng.standard_normal((b, h_kv, t_k, d)).astype(dtype)
    v = rng.standard_normal((b, h_kv, t_k, d_v)).astype(dtype)
    mask = rng.random((b, 1, t_q, t_k)) < 0.6
    mask[0, 0, min(1, t_q - 1)] = False  # a query that sees no key: zeros, never NaN
    return q, k, v, mask


def test_repeat_kv_is_hf_repeat_kv_and_repeat_interleave():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    for n_rep in (1, 2, 4):
        ref = hf_repeat_kv(T(x), n_rep)
        assert_close(ng.repeat_kv(x, n_rep), ref, "float64")
        assert_close(jg.repeat_kv(jnp.asarray(x), n_rep), ref, "float64")
        assert_close(tg.repeat_kv(T(x), n_rep), torch.repeat_interleave(T(x), n_rep, dim=1), "float64")
    # Query head 3 of 6 over 3 KV heads (n_rep = 2) reads KV head 1, not head 0 (np.tile's order).
    assert np.array_equal(ng.repeat_kv(x, 2)[:, 3], x[:, 1])


def test_repeat_kv_backward_sums_each_group():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5))
    g = rng.standard_normal((2, 6, 4, 5))
    xt = T(x).requires_grad_()
    (hf_repeat_kv(xt, 2) * T(g)).sum().backward()
    assert_close(ng.repeat_kv_backward(g, 2), xt.grad, "float64", kind="grad")
    assert_close(ng.repeat_kv_backward(g, 2)[:, 1], g[:, 2] + g[:, 3], "float64")  # by hand


@pytest.mark.parametrize("h_kv", [1, 2, 3, 6])  # MQA, GQA with groups of 3 and 2, plain MHA
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_matches_torch_gqa_and_hf_repeat(h_kv, dtype):
    q, k, v, mask = _problem(np.random.default_rng(h_kv), h_kv=h_kv, dtype=dtype)
    out_t, w_t = tg.grouped_query_attention(T(q), T(k), T(v), T(mask))
    # A second, independent torch route: HF's repeat_kv, then SDPA without GQA.
    n_rep = 6 // h_kv
    hf_out = F.scaled_dot_product_attention(T(q), hf_repeat_kv(T(k), n_rep), hf_repeat_kv(T(v), n_rep), attn_mask=T(mask))
    assert_close(out_t, hf_out, dtype)
    for kernel in ("steps", "fast"):
        out_n, w_n = ng.grouped_query_attention(q, k, v, mask, kernel=kernel)
        out_j, w_j = jg.grouped_query_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask),
                                                kernel=kernel)
        for got, ref, what in ((out_n, out_t, "numpy out"), (out_j, out_t, "jax out"),
                               (w_n, w_t, "numpy weights"), (w_j, w_t, "jax weights")):
            assert np.asarray(got).dtype == np.dtype(dtype)
            assert_close(got, ref, dtype, what=f"{what} ({kernel})")
    assert np.all(out_n[0, :, 1] == 0) and not np.isnan(out_n).any()


def test_mqa_golden_every_head_reads_the_one_kv_head():
    """With one KV head, query head h's output is plain attention of q[:, h] over that head."""
    q, k, v, mask = _problem(np.random.default_rng(3), h_kv=1)
    out, _ = ng.grouped_query_attention(q, k, v, mask)
    for h in range(q.shape[1]):
        ref, _ = ta.scaled_dot_product_attention(T(q[:, h]), T(k[:, 0]), T(v[:, 0]), T(mask[:, 0]))
        assert_close(out[:, h], ref, "float64")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_additive_bias_matches_torch_float_attn_mask(dtype):
    """attention's bias= goes where torch SDPA adds a float attn_mask; with a bool mask too, empty
    rows stay zero."""
    rng = np.random.default_rng(4)
    q, k, v, mask = _problem(rng, dtype=dtype)
    bias = rng.standard_normal((6, 5, 7)).astype(dtype)
    ref_plain = F.scaled_dot_product_attention(T(q), T(k).repeat_interleave(3, 1), T(v).repeat_interleave(3, 1),
                                               attn_mask=T(bias))
    out_t, _ = tg.grouped_query_attention(T(q), T(k), T(v), bias=T(bias))
    assert_close(out_t, ref_plain, dtype)
    out_t, w_t = tg.grouped_query_attention(T(q), T(k), T(v), T(mask), bias=T(bias))
    assert torch.all(out_t[0, :, 1] == 0)
    out_n, w_n = ng.grouped_query_attention(q, k, v, mask, bias=bias, kernel="fast")  # bias runs the steps
    out_j, w_j = jg.grouped_query_attention(*(jnp.asarray(a) for a in (q, k, v, mask)), bias=jnp.asarray(bias))
    for got, ref in ((out_n, out_t), (out_j, out_t), (w_n, w_t), (w_j, w_t)):
        assert_close(got, ref, dtype)
    # Same through attention.scaled_dot_product_attention directly, with equal head counts.
    kr, vr = ng.repeat_kv(k, 3), ng.repeat_kv(v, 3)
    ref, _ = ta.scaled_dot_product_attention(T(q), T(kr), T(vr), T(mask), bias=T(bias))
    assert_close(na.scaled_dot_product_attention(q, kr, vr, mask, bias=bias)[0], ref, dtype)
    assert_close(ja.scaled_dot_product_attention(*(jnp.asarray(a) for a in (q, kr, vr, mask)),
                                                 bias=jnp.asarray(bias))[0], ref, dtype)


def _grads_all_ways(q, k, v, mask, bias, g):
    out, w = ng.grouped_query_attention(q, k, v, mask, bias=bias)
    ours = ng.grouped_query_attention_backward(g, q, k, v, w)
    leaves = [T(a.copy()).requires_grad_() for a in (q, k, v)]
    out_t, _ = tg.grouped_query_attention(*leaves, T(mask), bias=None if bias is None else T(bias))
    (out_t * T(g)).sum().backward()
    f = lambda *a: jnp.sum(jg.grouped_query_attention(*a, jnp.asarray(mask),
                                                      bias=None if bias is None else jnp.asarray(bias))[0] * g)
    jax_g = jax.grad(f, argnums=(0, 1, 2))(*(jnp.asarray(a) for a in (q, k, v)))
    return ours, [t.grad for t in leaves], jax_g


@pytest.mark.parametrize("h_kv", [1, 2, 6])
@pytest.mark.parametrize("with_bias", [False, True])
def test_backward_matches_torch_autograd_and_jax_grad(h_kv, with_bias):
    rng = np.random.default_rng(10 + h_kv)
    q, k, v, mask = _problem(rng, h_kv=h_kv)
    bias = rng.standard_normal((6, 5, 7)) if with_bias else None
    g = rng.standard_normal((2, 6, 5, 3))
    ours, torch_g, jax_g = _grads_all_ways(q, k, v, mask, bias, g)
    for name, a, t, j in zip("qkv", ours, torch_g, jax_g):
        assert a.shape == t.shape
        assert_close(a, t, "float64", kind="grad", what=f"d{name} vs torch")
        assert_close(a, j, "float64", kind="grad", what=f"d{name} vs jax")
    assert np.abs(ours[1]).max() > 0  # not a trivially zero comparison


def test_backward_matches_finite_differences():
    rng = np.random.default_rng(20)
    q, k, v, mask = _problem(rng, b=1, h=4, h_kv=2, t_q=3, t_k=4, d=2, d_v=2)
    g = rng.standard_normal((1, 4, 3, 2))
    _, w = ng.grouped_query_attention(q, k, v, mask)
    ours = ng.grouped_query_attention_backward(g, q, k, v, w)
    args, h = [q, k, v], 1e-6
    for i, name in enumerate("qkv"):
        fd = np.zeros_like(args[i])
        for idx in np.ndindex(args[i].shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[i][idx] += h
            minus[i][idx] -= h
            fd[idx] = (np.sum(ng.grouped_query_attention(*plus, mask)[0] * g)
                       - np.sum(ng.grouped_query_attention(*minus, mask)[0] * g)) / (2 * h)
        assert_close(ours[i], fd, "float64", kind="finite_difference", what=f"d{name}")


@st.composite
def gqa_problem(draw):
    h_kv = draw(st.integers(1, 4))
    n_rep = draw(st.integers(1, 4))
    b, t_q, t_k, d = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    q, k, v, _ = _problem(rng, b=b, h=h_kv * n_rep, h_kv=h_kv, t_q=t_q, t_k=t_k, d=d, d_v=d)
    mask = {"none": None, "causal": np.tril(np.ones((t_q, t_k), bool)),
            "random": rng.random((b, 1, t_q, t_k)) < 0.5}[draw(st.sampled_from(["none", "causal", "random"]))]
    return q, k, v, mask, rng.standard_normal((b, h_kv * n_rep, t_q, d))


@SETTINGS
@given(gqa_problem())
def test_random_groupings_forward_and_backward(problem):
    q, k, v, mask, g = problem
    mt = None if mask is None else T(mask)
    out_t, w_t = tg.grouped_query_attention(T(q), T(k), T(v), mt)
    out_n, w_n = ng.grouped_query_attention(q, k, v, mask)
    out_j, _ = jg.grouped_query_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                          None if mask is None else jnp.asarray(mask))
    assert_close(out_n, out_t, "float64")
    assert_close(out_j, out_t, "float64")
    assert_close(w_n, w_t, "float64")
    leaves = [T(a.copy()).requires_grad_() for a in (q, k, v)]
    (tg.grouped_query_attention(*leaves, mt)[0] * T(g)).sum().backward()
    for a, t in zip(ng.grouped_query_attention_backward(g, q, k, v, w_n), leaves):
        assert_close(a, t.grad, "float64", kind="grad")


def test_float32_gradients_within_the_table():
    rng = np.random.default_rng(30)
    q, k, v, mask = _problem(rng, h_kv=2, dtype=np.float32)
    g = rng.standard_normal((2, 6, 5, 3)).astype(np.float32)
    ours, torch_g, _ = _grads_all_ways(q, k, v, mask, None, g)
    for a, t in zip(ours, torch_g):
        assert a.dtype == np.float32
        assert_close(a, t, "float32", kind="grad")
    assert tolerance("float32", "grad").rtol <= 1e-4
