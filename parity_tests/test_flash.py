"""Fast and tiled (flash) attention give the numbers of plain attention: values, logsumexp and
gradients, NumPy and JAX against torch (F.scaled_dot_product_attention + autograd), and
scaled_dot_product_attention(kernel="fast") against the readable four steps (kernel="steps")."""
import math
import subprocess
import sys
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.tolerances import assert_close
from jax_impl import flash as jflash
from numpy_impl import attention as natt
from numpy_impl import flash as nflash
from numpy_impl.masks import make_causal_mask
from torch_ref import flash as tflash

DTYPES = [np.float32, np.float64]


def _qkv(rng, lead, t_q, t_k, d, d_v, dtype):
    q = rng.standard_normal(lead + (t_q, d)).astype(dtype)
    k = rng.standard_normal(lead + (t_k, d)).astype(dtype)
    v = rng.standard_normal(lead + (t_k, d_v)).astype(dtype)
    return q, k, v


def _random_mask(rng, shape, p=0.4, dead_row=True):
    """Random bool mask; row 1 fully masked (zeros, never NaN) when the shape has one."""
    m = rng.random(shape) < p
    if dead_row and shape[-2] > 1:
        m[..., 1, :] = False
    return m


def _readable(q, k, v, mask, scale):
    """The teaching text's four steps, called one by one."""
    scores = natt.attn_scaled(natt.pairwise_similarities(q, k), scale)
    weights = natt.attn_softmax(scores, mask)
    return natt.compute_outputs(weights, v), weights


def _lse_close(a, ref, dtype, what):
    """Equal finite values and -inf in the same places (fully masked rows)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert np.array_equal(np.isneginf(a), np.isneginf(ref)), what
    assert_close(np.where(np.isneginf(a), 0, a), np.where(np.isneginf(ref), 0, ref), dtype, what=what)


def _torch_reference(q, k, v, mask, causal, dout, scale=None):
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    tm = None if mask is None else torch.from_numpy(mask)
    out, lse = tflash.flash_attention(tq, tk, tv, tm, scale=scale, causal=causal)
    (out * torch.from_numpy(dout)).sum().backward()
    return out.detach().numpy(), lse.detach().numpy(), (tq.grad.numpy(), tk.grad.numpy(), tv.grad.numpy())


# ------------------------------------------------------------------------------------------------
# kernel="fast" equals the readable steps (kernel="steps", the default).

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masking", ["none", "random", "causal"])
def test_fast_kernel_equals_readable_steps(dtype, masking):
    rng = np.random.default_rng(0)
    # Big enough to run on the thread pool, in several row blocks per head (476 float32 or 238
    # float64 rows of 1100 keys fill a 2 MiB tile, so 600 rows make 2 or 3 blocks).
    q, k, v = _qkv(rng, (2, 4), 600, 1100, 32, 24, dtype)
    assert 600 > nflash._block_rows(1100, np.dtype(dtype).itemsize)
    mask = {"none": None, "random": _random_mask(rng, (2, 1, 600, 1100)),
            "causal": make_causal_mask(600, 1100)}[masking]
    scale = 1.0 / math.sqrt(32)
    ref_out, ref_w = _readable(q, k, v, mask, scale)
    out, w = natt.scaled_dot_product_attention(q, k, v, mask, kernel="fast")  # flash.fast_attention
    assert out.dtype == w.dtype == dtype
    steps_out, steps_w = natt.scaled_dot_product_attention(q, k, v, mask)  # the default: the four steps
    assert np.array_equal(steps_out, ref_out) and np.array_equal(steps_w, ref_w)
    assert_close(out, ref_out, dtype, what="out")
    assert_close(w, ref_w, dtype, what="weights")
    fast_out, none = nflash.fast_attention(q, k, v, mask)  # without weights: output normalised
    assert none is None
    assert_close(fast_out, ref_out, dtype, what="out without weights")
    if masking == "random":
        assert np.all(out[:, :, 1] == 0) and np.all(w[:, :, 1] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masking", ["none", "random"])
def test_jax_fast_kernel_equals_plain_jit_values_and_grads(dtype, masking):
    """jax_impl.attention's kernel="fast" (flash.fast_attention, per head) against its plain jitted
    steps (_sdpa, kernel="steps"): outputs, weights, and jax.grad through both, a fully masked row
    included."""
    from jax_impl import attention as jatt

    rng = np.random.default_rng(3)
    q, k, v = (jnp.asarray(x) for x in _qkv(rng, (2, 3), 24, 40, 16, 8, dtype))
    mask = None if masking == "none" else jnp.asarray(_random_mask(rng, (2, 1, 24, 40)))
    scale = 1.0 / math.sqrt(16)
    out, w = jatt.scaled_dot_product_attention(q, k, v, mask, kernel="fast")
    ref_out, ref_w = jatt._sdpa(q, k, v, mask, scale)
    steps = jatt.scaled_dot_product_attention(q, k, v, mask)  # the default: the plain steps
    assert np.array_equal(steps[0], ref_out) and np.array_equal(steps[1], ref_w)
    assert out.dtype == w.dtype == dtype
    assert_close(out, ref_out, dtype, what="out")
    assert_close(w, ref_w, dtype, what="weights")
    dout = jnp.asarray(rng.standard_normal(out.shape).astype(dtype))
    grads = jax.grad(lambda *a: jnp.sum(jatt.scaled_dot_product_attention(*a, mask, kernel="fast")[0] * dout),
                     (0, 1, 2))(q, k, v)
    ref_grads = jax.grad(lambda *a: jnp.sum(jatt._sdpa(*a, mask, scale)[0] * dout), (0, 1, 2))(q, k, v)
    for name, g, ref in zip("qkv", grads, ref_grads):
        assert bool(jnp.all(jnp.isfinite(g))), name
        assert_close(g, ref, dtype, kind="grad", what=f"d{name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("huge", [False, True], ids=["moderate", "huge"])
def test_fast_attention_unshifted_and_shifted_exp_vs_torch(dtype, huge):
    """fast_attention skips the softmax shift when every row max is moderate and shifts by the row
    max when some row's scores could overflow exp (here 1.5 times the bound, _safe_row_max), with
    and without the weights: both equal torch's F.scaled_dot_product_attention."""
    rng = np.random.default_rng(8)
    q, k, v = _qkv(rng, (2, 3), 70, 90, 16, 8, dtype)
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(16)
    if huge:
        q = q * dtype(1.5 * nflash._safe_row_max(dtype, 90) / np.abs(scores).max())
    else:
        assert np.abs(scores).max() < nflash._safe_row_max(dtype, 90)
    ref = torch.nn.functional.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)))
    for need_weights in (False, True):
        out, _ = nflash.fast_attention(q, k, v, need_weights=need_weights)
        assert np.all(np.isfinite(out))
        assert_close(out, ref, dtype, what=f"numpy, need_weights={need_weights}")
        jout, _ = jflash.fast_attention(*map(jnp.asarray, (q, k, v)), need_weights=need_weights)
        assert_close(jout, ref, dtype, what=f"jax, need_weights={need_weights}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_causal_flag_equals_causal_mask_vs_torch(dtype):
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, (3,), 50, 50, 8, 8, dtype)
    ref = torch.nn.functional.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v)), is_causal=True)
    out, w = nflash.fast_attention(q, k, v, causal=True, need_weights=True)
    assert_close(out, ref, dtype, what="numpy causal")
    assert np.all(np.triu(w[0], 1) == 0)
    jout, _ = jflash.fast_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), causal=True)
    assert_close(jout, ref, dtype, what="jax causal")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead, masking, causal", [
    ((3,), "none", True),  # odd head count: one head per loop step
    ((2, 2), "random", False),  # a per-batch mask, two heads per step
    ((2, 2), "random", True),
], ids=["odd-heads-causal", "mask", "mask-causal"])
def test_jax_fast_row_blocks_values_weights_grads_vs_torch(dtype, lead, masking, causal):
    """jax_impl's fast_attention at a length that splits each head into several query-row blocks
    (jflash._fast_block_rows: 218 or 187 float32 rows, 109 or 93 float64 rows), causal blocks cut to
    the keys they can see: output, weights and jax.grad against torch (autograd through
    F.scaled_dot_product_attention), a fully masked row included."""
    rng = np.random.default_rng(5)
    t_q, t_k = 600, 600 if causal else 700
    assert jflash._fast_block_rows(t_q, t_k, np.dtype(dtype).itemsize) < t_q
    q, k, v = _qkv(rng, lead, t_q, t_k, 16, 8, dtype)
    mask = None if masking == "none" else _random_mask(rng, lead[:1] + (1,) * (len(lead) - 1) + (t_q, t_k), p=0.6)
    dout = rng.standard_normal(lead + (t_q, 8)).astype(dtype)
    ref_out, ref_lse, ref_grads = _torch_reference(q, k, v, mask, causal, dout)
    jmask = None if mask is None else jnp.asarray(mask)
    jq, jk, jv = (jnp.asarray(x) for x in (q, k, v))
    out, w = jflash.fast_attention(jq, jk, jv, jmask, causal=causal, need_weights=True)
    assert out.dtype == w.dtype == dtype
    assert_close(out, ref_out, dtype, what="out")
    s = np.einsum("...qd,...kd->...qk", q.astype(np.float64), k.astype(np.float64)) / math.sqrt(16)
    with np.errstate(invalid="ignore"):  # exp(-inf - -inf) on the fully masked row, zeroed next
        ref_w = np.nan_to_num(np.exp(s - np.asarray(ref_lse, np.float64)[..., None]), nan=0.0)
    if mask is not None:
        ref_w = np.where(mask, ref_w, 0.0)
    if causal:
        ref_w = np.tril(ref_w)
    assert_close(w, ref_w.astype(dtype), dtype, what="weights")
    grads = jax.grad(lambda *a: jnp.sum(jflash.fast_attention(*a, jmask, causal=causal)[0] * dout), (0, 1, 2))(jq, jk, jv)
    for name, g, ref in zip("qkv", grads, ref_grads):
        assert bool(jnp.all(jnp.isfinite(g))), name
        assert_close(g, ref, dtype, kind="grad", what=f"d{name}")


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_the_default_kernel_is_the_readable_steps(backend, monkeypatch):
    """No hidden switch: without kernel="fast", scaled_dot_product_attention never reaches
    flash.fast_attention, and with it, it does."""
    from jax_impl import attention as jatt

    mod, kernels = {"numpy": (natt, nflash), "jax": (jatt, jflash)}[backend]
    calls = []
    real = kernels.fast_attention
    monkeypatch.setattr(kernels, "fast_attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, k, v = _qkv(np.random.default_rng(7), (2,), 5, 6, 4, 4, np.float64)
    mod.scaled_dot_product_attention(q, k, v)
    assert calls == []
    mod.scaled_dot_product_attention(q, k, v, kernel="fast")
    assert calls == [1]


@pytest.mark.parametrize("backend", ["numpy_impl", "jax_impl"])
def test_importing_the_readable_files_loads_no_fast_kernel(backend):
    """The readable attention and multi-head files load neither flash.py nor threadpoolctl (its
    thread pool's helper): kernel="fast" imports them only when a call asks for it."""
    code = (f"import sys, {backend}.attention, {backend}.multihead\n"
            f"loaded = [m for m in ('{backend}.flash', 'numpy_impl.flash', 'numpy_impl.fast', 'threadpoolctl') "
            "if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_fast_kernel_runs_the_steps_when_leading_axes_broadcast():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((2, 3, 5, 4))
    k, v = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))  # shared keys: broadcast by matmul
    out, _ = natt.scaled_dot_product_attention(q, k, v, kernel="fast")
    ref = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k).expand(2, 3, 5, 4), torch.from_numpy(v).expand(2, 3, 5, 4))
    assert_close(out, ref, np.float64)


# ------------------------------------------------------------------------------------------------
# Tiled attention: values, logsumexp and gradients against torch.

CASES = [
    # lead, t_q, t_k, d, d_v, block_q, block_k, masking, causal
    ((2, 3), 37, 53, 8, 5, 16, 32, "random", False),
    ((2, 3), 37, 53, 8, 5, 16, 32, "random", True),
    ((1, 2), 64, 64, 16, 16, 16, 16, "none", True),  # blocks divide T: pure tile skipping
    ((2,), 20, 70, 4, 4, 7, 9, "padding", False),  # key padding mask, odd tiles
    # (tiles longer than T: test_flash_properties draws block sizes up to 30 for T up to 24)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}x{c[2]}-b{c[5]}x{c[6]}-{c[7]}-{'causal' if c[8] else 'full'}")
def test_flash_values_and_grads_match_torch(dtype, case):
    lead, t_q, t_k, d, d_v, bq, bk, masking, causal = case
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, lead, t_q, t_k, d, d_v, dtype)
    if masking == "random":
        mask = _random_mask(rng, (lead[0], 1, t_q, t_k))
    elif masking == "padding":
        lengths = np.array([t_k, 0])[: lead[0]]  # second sequence: every key padded -> dead rows
        mask = (np.arange(t_k)[None, :] < lengths[:, None])[:, None, :]
    else:
        mask = None
    dout = rng.standard_normal(lead + (t_q, d_v)).astype(dtype)
    ref_out, ref_lse, ref_grads = _torch_reference(q, k, v, mask, causal, dout)

    out, lse = nflash.flash_attention(q, k, v, mask, causal=causal, block_q=bq, block_k=bk)
    assert out.dtype == lse.dtype == dtype
    assert_close(out, ref_out, dtype, what="numpy out")
    _lse_close(lse, ref_lse, dtype, "numpy lse")
    grads = nflash.flash_attention_backward(dout, q, k, v, out, lse, mask, causal=causal, block_q=bq, block_k=bk)
    for name, g, ref in zip("qkv", grads, ref_grads):
        assert np.all(np.isfinite(g))
        assert_close(g, ref, dtype, kind="grad", what=f"numpy d{name}")

    jm = None if mask is None else jnp.asarray(mask)
    jq, jk, jv = map(jnp.asarray, (q, k, v))
    jout, jlse = jflash.flash_attention(jq, jk, jv, jm, causal=causal, block_q=bq, block_k=bk)
    assert jout.dtype == dtype
    assert_close(jout, ref_out, dtype, what="jax out")
    _lse_close(jlse, ref_lse, dtype, "jax lse")

    def loss(q_, k_, v_):
        return jnp.sum(jflash.flash_attention(q_, k_, v_, jm, causal=causal, block_q=bq, block_k=bk)[0] * dout)

    jgrads = jax.grad(loss, argnums=(0, 1, 2))(jq, jk, jv)
    for name, g, ref in zip("qkv", jgrads, ref_grads):
        assert_close(g, ref, dtype, kind="grad", what=f"jax.grad d{name}")
    if case is not CASES[0]:
        return  # the standalone JAX backward (what jax.grad runs) once is enough: each call compiles
    for name, g, ref in zip("qkv", jflash.flash_attention_backward(jnp.asarray(dout), jq, jk, jv, jout, jlse, jm,
                                                                    causal=causal, block_q=bq, block_k=bk), ref_grads):
        assert_close(g, ref, dtype, kind="grad", what=f"jax backward d{name}")


def test_jax_gradient_through_logsumexp_matches_torch():
    """The custom VJP also carries a cotangent on the returned logsumexp (d lse / d s = P)."""
    rng = np.random.default_rng(4)
    q, k, v = _qkv(rng, (2,), 24, 40, 8, 8, np.float64)
    mask = _random_mask(rng, (2, 24, 40))
    w = rng.standard_normal((2, 24))
    tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
    out, lse = tflash.flash_attention(tq, tk, tv, torch.from_numpy(mask), causal=True)
    (out.sum() + torch.where(torch.isinf(lse), 0, lse * torch.from_numpy(w)).sum()).backward()

    def loss(q_, k_, v_):
        o, l_ = jflash.flash_attention(q_, k_, v_, jnp.asarray(mask), causal=True, block_q=8, block_k=16)
        return o.sum() + jnp.sum(jnp.where(jnp.isinf(l_), 0.0, l_ * w))

    grads = jax.grad(loss, argnums=(0, 1, 2))(*map(jnp.asarray, (q, k, v)))
    for g, t in zip(grads, (tq, tk, tv)):
        assert_close(g, t.grad, np.float64, kind="grad")


def test_numpy_flash_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    q, k, v = _qkv(rng, (1,), 6, 9, 3, 2, np.float64)
    mask = _random_mask(rng, (6, 9), p=0.6)
    dout = rng.standard_normal((1, 6, 2))

    def f(q_, k_, v_):
        return float(np.sum(nflash.flash_attention(q_, k_, v_, mask, block_q=4, block_k=4)[0] * dout))

    out, lse = nflash.flash_attention(q, k, v, mask, block_q=4, block_k=4)
    grads = nflash.flash_attention_backward(dout, q, k, v, out, lse, mask, block_q=4, block_k=4)
    h = 1e-6
    for which, g in enumerate(grads):
        fd = np.zeros_like(g)
        for idx in np.ndindex(g.shape):
            args_p = [q.copy(), k.copy(), v.copy()]
            args_m = [q.copy(), k.copy(), v.copy()]
            args_p[which][idx] += h
            args_m[which][idx] -= h
            fd[idx] = (f(*args_p) - f(*args_m)) / (2 * h)
        assert_close(g, fd, np.float64, kind="finite_difference")


def test_tiled_forward_never_holds_the_score_matrix():
    """tracemalloc sees NumPy's allocations: at T = 2048 the full (T, T) float32 score matrix is
    16 MiB; the tiled forward's peak stays within a few tiles plus its inputs and outputs."""
    rng = np.random.default_rng(6)
    t, d = 2048, 16
    q, k, v = _qkv(rng, (1,), t, t, d, d, np.float32)
    scores_bytes = t * t * 4
    tracemalloc.start()
    try:
        nflash.flash_attention(q, k, v, causal=True, block_q=128, block_k=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < scores_bytes / 8, (peak, scores_bytes)


@pytest.mark.parametrize("backend", [nflash, jflash, tflash], ids=["numpy", "jax", "torch"])
def test_flash_input_errors_name_the_argument(backend):
    conv = {nflash: np.asarray, jflash: jnp.asarray, tflash: torch.from_numpy}[backend]
    q = conv(np.zeros((2, 4, 3)))
    k = conv(np.zeros((2, 5, 3)))
    with pytest.raises(InputError, match="block_q"):
        backend.flash_attention(q, k, k, block_q=0)
    with pytest.raises(InputError, match="causal"):
        backend.flash_attention(q, k, k, causal="yes")
    with pytest.raises(InputError, match="mask"):
        backend.fast_attention(q, k, k, mask=conv(np.ones((4, 5))))  # not bool
    with pytest.raises(InputError, match="v"):
        backend.fast_attention(q, k, conv(np.zeros((2, 6, 3))))
