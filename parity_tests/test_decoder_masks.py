"""Sliding-window causal masks and ALiBi biases, in the three backends.

Sliding window: against Hugging Face's own mask function (transformers.masking_utils, Mistral's) and
the definition i - W < j <= i written out per element. ALiBi: slopes by hand (the paper's 8-head
sequence), the paper's recursion for head counts that are not powers of two, Bloom's
_get_alibi_slopes (float32, so within the float32 row); biases against -m (i - j) element by element;
and attention weights with our bias equal to those with Bloom's build_alibi_tensor (m * j), which
differs by a per-row constant.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.masking_utils import sliding_window_causal_mask_function
from transformers.models.bloom.modeling_bloom import _get_alibi_slopes, build_alibi_tensor

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.tolerances import assert_close
from jax_impl import attention as ja, masks as jm
from numpy_impl import attention as na, masks as nm
from torch_ref import attention as ta, masks as tm

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODULES = {"numpy": nm, "jax": jm, "torch": tm}


def _window_by_definition(t_q, window, t_k, offset):
    return np.array([[(i + offset) - window < j <= (i + offset) for j in range(t_k)] for i in range(t_q)])


def test_sliding_window_by_hand():
    # Window 2 over 4 positions: each query sees itself and the key before it.
    want = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], bool)
    for mod in MODULES.values():
        assert np.array_equal(np.asarray(mod.make_sliding_window_mask(4, 2)), want)


def test_sliding_window_wider_than_the_sequence_is_causal():
    for mod in MODULES.values():
        assert np.array_equal(np.asarray(mod.make_sliding_window_mask(5, 9, 7, offset=2)),
                              np.asarray(mod.make_causal_mask(5, 7, offset=2)))


@SETTINGS
@given(st.integers(1, 9), st.integers(1, 10), st.integers(1, 12), st.integers(-3, 8))
def test_sliding_window_random_sizes_offsets_and_windows(t_q, window, t_k, offset):
    ref = _window_by_definition(t_q, window, t_k, offset)
    hf = sliding_window_causal_mask_function(window)(0, 0, torch.arange(t_q)[:, None] + offset, torch.arange(t_k)[None, :])
    assert np.array_equal(hf.expand(t_q, t_k).numpy(), ref)
    for name, mod in MODULES.items():
        got = np.asarray(mod.make_sliding_window_mask(t_q, window, t_k, offset))
        assert got.dtype == np.bool_ and np.array_equal(got, ref), name
    assert ref.sum(-1).max(initial=0) <= window  # at most `window` keys per query


def test_alibi_slopes_by_hand():
    """Press et al.: 8 heads -> 1/2, 1/4, ..., 1/256. 6 heads -> the 4-head slopes (1/4 ... 1/256),
    then every other 8-head slope from the first (1/2, 1/8)."""
    for mod in MODULES.values():
        assert np.array_equal(np.asarray(mod.alibi_slopes(8)), 2.0 ** -np.arange(1, 9))
        assert np.array_equal(np.asarray(mod.alibi_slopes(6)), [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8])
        assert np.array_equal(np.asarray(mod.alibi_slopes(1)), [2.0 ** -8])


@pytest.mark.parametrize("n", list(range(1, 33)) + [40, 48, 64, 96, 100])
def test_alibi_slopes_paper_recursion_and_bloom(n):
    """The paper's get_slopes: powers of two 2^(-8k/n); otherwise get_slopes(p) + get_slopes(2p)[0::2][:n - p].
    Bloom builds them in float32 (its bases 2^(-8/p) are rounded for p >= 16), so it is compared at
    the float32 tolerance."""
    p = 2 ** math.floor(math.log2(n))
    pow2 = lambda m: 2.0 ** (-8.0 * np.arange(1, m + 1) / m)  # noqa: E731
    ref = pow2(n) if p == n else np.concatenate([pow2(p), pow2(2 * p)[0::2][: n - p]])
    for name, mod in MODULES.items():
        got = mod.alibi_slopes(n)
        assert_close(got, ref, "float64", what=f"{name} slopes({n})")
        assert_close(got, _get_alibi_slopes(n, "cpu").double(), "float32", what=f"{name} vs Bloom")


def _paper_bias(slopes, t_q, t_k, offset):
    return np.array([[[-m * ((i + offset) - j) for j in range(t_k)] for i in range(t_q)] for m in slopes])


@SETTINGS
@given(st.integers(1, 20), st.integers(1, 8), st.integers(1, 9), st.integers(0, 6))
def test_alibi_bias_is_the_paper_formula(n_heads, t_q, t_k, offset):
    ref = _paper_bias(nm.alibi_slopes(n_heads), t_q, t_k, offset)
    for name, mod in MODULES.items():
        got = mod.alibi_bias(n_heads, t_q, t_k, offset)
        assert tuple(got.shape) == (n_heads, t_q, t_k)
        assert_close(got, ref, "float64", what=name)
    causal = np.asarray(nm.make_causal_mask(t_q, t_k, offset))
    assert np.all(ref[:, causal] <= 0)  # a penalty on every key a causal query may see


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n_heads", [4, 6, 12])
def test_alibi_attention_equals_blooms(dtype, n_heads):
    """softmax(QK^T s + ours) == softmax(QK^T s + Bloom's m*j): the per-row constant m*i cancels.
    Bloom's slopes are float32, so the reference is rebuilt from its key-position tensor divided by
    its own slopes and multiplied by ours (the same m*j, exact slopes) for the float64 comparison,
    and used as it is at float32."""
    rng = np.random.default_rng(n_heads)
    b, t = 2, 9
    q, k, v = (rng.standard_normal((b, n_heads, t, 5)).astype(dtype) for _ in range(3))
    causal = np.tril(np.ones((t, t), bool))
    bloom = build_alibi_tensor(torch.ones(b, t, dtype=torch.float64), n_heads, torch.float64).reshape(b, n_heads, 1, t)
    if dtype == "float64":
        bloom = bloom / _get_alibi_slopes(n_heads, "cpu").double()[:, None, None] * tm.alibi_slopes(n_heads)[:, None, None]
    ref_out, ref_w = ta.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)), torch.from_numpy(causal),
                                                     bias=bloom.to(getattr(torch, dtype)))
    ours = {
        "numpy": na.scaled_dot_product_attention(q, k, v, causal, bias=nm.alibi_bias(n_heads, t, dtype=dtype)),
        "jax": ja.scaled_dot_product_attention(*(jnp.asarray(a) for a in (q, k, v, causal)),
                                               bias=jm.alibi_bias(n_heads, t, dtype=dtype)),
        "torch": ta.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v, causal)),
                                                 bias=tm.alibi_bias(n_heads, t, dtype=getattr(torch, dtype))),
    }
    for name, (out, w) in ours.items():
        assert_close(out, ref_out, dtype, what=f"{name} out")
        assert_close(w, ref_w, dtype, what=f"{name} weights")
    # The raw biases differ (by -m*i per row): comparing them directly would be the wrong test.
    assert not np.allclose(nm.alibi_bias(n_heads, t), bloom[0].numpy())


def test_alibi_dtype_follows_the_argument():
    assert nm.alibi_bias(4, 3, dtype=np.float32).dtype == np.float32
    assert jm.alibi_bias(4, 3, dtype=jnp.float32).dtype == jnp.float32
    assert tm.alibi_bias(4, 3, dtype=torch.float32).dtype == torch.float32
    assert nm.alibi_slopes(4).dtype == np.float64
