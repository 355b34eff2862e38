"""Property-based parity (hypothesis): random shapes, head counts, T_q != T_k and random masks,
fully masked rows included, NumPy and JAX against torch in float64."""
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jax_impl  # noqa: F401
import jax.numpy as jnp
from triptych.common.params import init_mha_params
from triptych.common.tolerances import assert_close
from jax_impl import attention as ja, multihead as jm
from numpy_impl import attention as na, multihead as nm
from torch_ref import attention as ta, multihead as tm

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def attention_problem(draw):
    b = draw(st.integers(1, 3))
    h = draw(st.integers(1, 4))
    t_q = draw(st.integers(1, 9))
    t_k = draw(st.integers(1, 9))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    mask_kind = draw(st.sampled_from(["none", "random", "random+empty_row"]))
    mask = None
    if mask_kind != "none":
        mask = rng.random((b, h, t_q, t_k)) < 0.6
        if mask_kind == "random+empty_row":
            mask[0, 0, rng.integers(t_q)] = False  # a query that may attend to nothing
    q, k, v = (rng.standard_normal(s) for s in ((b, h, t_q, d), (b, h, t_k, d), (b, h, t_k, d)))
    return q, k, v, mask


@SETTINGS
@given(attention_problem())
def test_sdpa_random_shapes_and_masks(problem):
    q, k, v, mask = problem
    out_t, w_t = ta.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                                 mask=None if mask is None else torch.from_numpy(mask))
    out_n, w_n = na.scaled_dot_product_attention(q, k, v, mask)
    out_j, w_j = ja.scaled_dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                                 None if mask is None else jnp.asarray(mask))
    for got in (out_n, out_j):
        assert_close(got, out_t, "float64", what="sdpa output")
    for got in (w_n, w_j):
        assert_close(got, w_t, "float64", what="sdpa weights")
    if mask is not None:
        empty = ~mask.any(-1)
        assert np.all(np.asarray(w_n)[empty] == 0) and np.all(np.asarray(out_n)[empty] == 0)


@SETTINGS
@given(st.integers(1, 3), st.sampled_from([(4, 1), (4, 2), (6, 3), (8, 4), (12, 6)]), st.integers(1, 7),
       st.integers(1, 7), st.booleans(), st.integers(0, 2**31 - 1))
def test_multihead_random_heads_cross_and_masks(b, dims, t_q, t_k, with_mask, seed):
    d_model, n_heads = dims
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, t_q, d_model))
    kv = rng.standard_normal((b, t_k, d_model))
    params = init_mha_params(d_model, seed=seed % 1000)
    mask = (rng.random((b, 1, t_q, t_k)) < 0.5) if with_mask else None
    tp = {k: torch.from_numpy(v) for k, v in params.items()}
    out_t, w_t = tm.multihead_attention(torch.from_numpy(x), tp, n_heads, kv=torch.from_numpy(kv),
                                        mask=None if mask is None else torch.from_numpy(mask))
    out_n, w_n = nm.multihead_attention(x, params, n_heads, kv=kv, mask=mask)
    out_j, w_j = jm.multihead_attention(jnp.asarray(x), params, n_heads, kv=jnp.asarray(kv),
                                        mask=None if mask is None else jnp.asarray(mask))
    cls_n = nm.MultiHeadAttention(d_model, n_heads, params=params)(x, kv, kv, mask=mask, average_attn_weights=False)
    for got in (out_n, out_j, cls_n[0]):
        assert_close(got, out_t, "float64", what="multi-head output")
    for got in (w_n, w_j, cls_n[1]):
        assert_close(got, w_t, "float64", what="multi-head weights")
