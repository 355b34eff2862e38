"""Property tests (hypothesis): for any shape, tile size, mask and causal flag, tiled attention equals
torch's attention in value, logsumexp and gradient; the fast default equals the readable steps."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.tolerances import assert_close
from jax_impl import flash as jflash
from numpy_impl import attention as natt
from numpy_impl import flash as nflash
from torch_ref import flash as tflash

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def problems(draw):
    t_q = draw(st.integers(1, 24))
    t_k = draw(st.integers(1, 24))
    return {
        "lead": draw(st.sampled_from([(1,), (2,), (2, 2)])),
        "t_q": t_q,
        "t_k": t_k,
        "d": draw(st.integers(1, 6)),
        "d_v": draw(st.integers(1, 6)),
        "block_q": draw(st.integers(1, 30)),
        "block_k": draw(st.integers(1, 30)),
        "mask": draw(st.sampled_from(["none", "random", "all_false", "per_key"])),
        "causal": draw(st.booleans()),
        "dtype": draw(st.sampled_from([np.float32, np.float64])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _make(p):
    rng = np.random.default_rng(p["seed"])
    lead, t_q, t_k, dt = p["lead"], p["t_q"], p["t_k"], p["dtype"]
    q = rng.standard_normal(lead + (t_q, p["d"])).astype(dt)
    k = rng.standard_normal(lead + (t_k, p["d"])).astype(dt)
    v = rng.standard_normal(lead + (t_k, p["d_v"])).astype(dt)
    dout = rng.standard_normal(lead + (t_q, p["d_v"])).astype(dt)
    mask = {
        "none": None,
        "random": rng.random(lead + (t_q, t_k)) < 0.5,
        "all_false": np.zeros((t_q, t_k), bool),  # every row fully masked: zeros, never NaN
        "per_key": rng.random((t_k,))[None, :] < 0.7,  # (1, T_k): broadcast over queries
    }[p["mask"]]
    return q, k, v, dout, mask


def _torch(q, k, v, dout, mask, causal):
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    out, lse = tflash.flash_attention(tq, tk, tv, None if mask is None else torch.from_numpy(mask), causal=causal)
    (out * torch.from_numpy(dout)).sum().backward()
    return out.detach().numpy(), lse.detach().numpy(), [x.grad.numpy() for x in (tq, tk, tv)]


def _lse_equal(a, ref, dtype):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert np.array_equal(np.isneginf(a), np.isneginf(ref))
    assert_close(np.where(np.isneginf(a), 0, a), np.where(np.isneginf(ref), 0, ref), dtype)


@settings(max_examples=60, **SETTINGS)
@given(problems())
def test_numpy_flash_equals_torch_for_any_tiles_and_masks(p):
    q, k, v, dout, mask = _make(p)
    ref_out, ref_lse, ref_grads = _torch(q, k, v, dout, mask, p["causal"])
    kw = dict(causal=p["causal"], block_q=p["block_q"], block_k=p["block_k"])
    out, lse = nflash.flash_attention(q, k, v, mask, **kw)
    assert_close(out, ref_out, p["dtype"], what="out")
    _lse_equal(lse, ref_lse, p["dtype"])
    grads = nflash.flash_attention_backward(dout, q, k, v, out, lse, mask, **kw)
    for g, ref in zip(grads, ref_grads):
        assert np.all(np.isfinite(g))
        assert_close(g, ref, p["dtype"], kind="grad")


@settings(max_examples=40, **SETTINGS)
@given(problems())
def test_fast_default_equals_readable_steps_for_any_shape_and_mask(p):
    q, k, v, _, mask = _make(p)
    scale = 1.0 / math.sqrt(p["d"])
    weights = natt.attn_softmax(natt.attn_scaled(natt.pairwise_similarities(q, k), scale), mask)
    out, w = natt.scaled_dot_product_attention(q, k, v, mask)
    assert_close(w, weights, p["dtype"], what="weights")
    assert_close(out, natt.compute_outputs(weights, v), p["dtype"], what="out")


@settings(max_examples=3, **SETTINGS)
@given(problems())
def test_jax_flash_equals_torch_for_any_tiles_and_masks(p):
    """Fewer examples: each new shape or tile size is a new XLA compilation."""
    q, k, v, dout, mask = _make(p)
    ref_out, ref_lse, ref_grads = _torch(q, k, v, dout, mask, p["causal"])
    jm = None if mask is None else jnp.asarray(mask)
    kw = dict(causal=p["causal"], block_q=p["block_q"], block_k=p["block_k"])
    out, lse = jflash.flash_attention(*map(jnp.asarray, (q, k, v)), jm, **kw)
    assert_close(out, ref_out, p["dtype"], what="out")
    _lse_equal(lse, ref_lse, p["dtype"])
    grads = jax.grad(lambda a, b, c: jnp.sum(jflash.flash_attention(a, b, c, jm, **kw)[0] * dout),
                     argnums=(0, 1, 2))(*map(jnp.asarray, (q, k, v)))
    for g, ref in zip(grads, ref_grads):
        assert_close(g, ref, p["dtype"], kind="grad")
