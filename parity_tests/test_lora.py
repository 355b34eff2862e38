"""LoRA in NumPy and JAX against peft (torch_ref.lora wraps torch modules with peft itself).

Adapters are drawn with init "random" (peft's init_lora_weights=False) so B != 0, and every test
first asserts that the adapter changes the output: a comparison against a no-op would pass trivially.
Tolerances come from triptych/common/tolerances.py (value: float64 1e-10, float32 1e-5; grad rows for the
hand-written backward)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn as nn

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.params import init_mha_params, mha_params_to_torch
from triptych.common.tolerances import assert_close, to_numpy
from jax_impl import lora as JL
from numpy_impl import lora as NL
from numpy_impl.lora import lora_linear_backward, lora_linear_forward
from numpy_impl.masks import make_causal_mask
from torch_ref import lora as TL

DTYPES = ["float64", "float32"]
D_IN, D_OUT, R = 24, 16, 4


def to_t(x):
    if isinstance(x, dict):
        return {k: to_t(v) for k, v in x.items()}
    return torch.from_numpy(np.array(x)) if isinstance(x, np.ndarray) else x


def to_j(x):
    if isinstance(x, dict):
        return {k: to_j(v) for k, v in x.items()}
    return jnp.asarray(x) if isinstance(x, np.ndarray) else x


def linear_case(dtype, seed=0, r=R):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((3, 7, D_IN)).astype(dtype),
        "w": (rng.standard_normal((D_OUT, D_IN)) / np.sqrt(D_IN)).astype(dtype),
        "b": (rng.standard_normal(D_OUT) * 0.1).astype(dtype),
        "lora": NL.init_lora_params(D_IN, D_OUT, r, "random", seed=seed + 1, dtype=dtype),
    }


def assert_not_noop(y_lora, y_base, dtype):
    """The adapter must move the output far beyond the tolerance, or the comparison proves nothing."""
    gap = float(np.max(np.abs(to_numpy(y_lora).astype(np.float64) - to_numpy(y_base))))
    assert gap > 1e-2, f"adapter changes the output by only {gap:g}: the test would pass for a no-op"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_linear_matches_peft_eval_mode(dtype, use_rslora):
    c = linear_case(dtype)
    alpha = 8.0
    ref = TL.lora_linear(to_t(c["x"]), to_t(c["w"]), to_t(c["b"]), to_t(c["lora"]), alpha, use_rslora)
    assert_not_noop(ref, c["x"] @ c["w"].T + c["b"], dtype)
    y_np = NL.lora_linear(c["x"], c["w"], c["b"], c["lora"], alpha, use_rslora)
    y_jax = JL.lora_linear(to_j(c["x"]), to_j(c["w"]), to_j(c["b"]), to_j(c["lora"]), alpha, use_rslora)
    assert y_np.dtype == y_jax.dtype == np.dtype(dtype)
    assert_close(y_np, ref, dtype, what="numpy lora_linear vs peft")
    assert_close(y_jax, ref, dtype, what="jax lora_linear vs peft")


@pytest.mark.parametrize("use_rslora", [False, True])
def test_scaling_is_peft_scaling(use_rslora):
    for r, alpha in ((1, 1.0), (4, 8.0), (16, 16.0), (64, 3.0)):
        ref = TL.lora_scaling(r, alpha, use_rslora)  # read off a peft layer
        assert NL.lora_scaling(r, alpha, use_rslora) == pytest.approx(ref, rel=1e-15)
        assert JL.lora_scaling(r, alpha, use_rslora) == pytest.approx(ref, rel=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_merge_and_unmerge_match_peft_and_merged_equals_unmerged(dtype):
    c = linear_case(dtype, seed=3)
    alpha = 6.0
    w_ref = TL.merge_lora(to_t(c["w"]), to_t(c["lora"]), alpha)
    assert_not_noop(w_ref, c["w"], dtype)
    for name, L, conv in (("numpy", NL, lambda a: a), ("jax", JL, to_j), ("torch", TL, to_t)):
        w_m = L.merge_lora(conv(c["w"]), conv(c["lora"]), alpha)
        assert_close(w_m, w_ref, dtype, what=f"{name} merged weight vs peft merge")
        # A plain linear with the merged weight computes what the unmerged adapter computes.
        y_merged = to_numpy(c["x"] @ to_numpy(w_m).T + c["b"])
        y_unmerged = L.lora_linear(conv(c["x"]), conv(c["w"]), conv(c["b"]), conv(c["lora"]), alpha)
        assert_close(y_merged, y_unmerged, dtype, what=f"{name} merged vs unmerged output")
        # unmerge recomputes the delta: W comes back within rounding, in every backend (peft's unmerge too).
        assert_close(L.unmerge_lora(w_m, conv(c["lora"]), alpha), c["w"], dtype, what=f"{name} unmerge")
        assert_close(L.lora_delta(conv(c["lora"]), alpha), to_numpy(w_ref) - c["w"], dtype, what=f"{name} delta")


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch"])
def test_default_and_gaussian_init_start_as_no_op_and_match_peft_distributions(backend):
    """B = 0 exactly, so LoRA with peft's default init equals the base layer (golden); A's
    distribution is peft's: U(+-1/sqrt(d_in)) (kaiming_uniform, a=sqrt(5)) or N(0, std 1/r)."""
    L = {"numpy": NL, "jax": JL, "torch": TL}[backend]
    d_in, d_out, r = 512, 64, 32  # 16384 draws of A: the sample std is within ~1% of the true one
    for init in ("default", "gaussian"):
        p = {k: to_numpy(v) for k, v in L.init_lora_params(d_in, d_out, r, init, seed=5).items()}
        assert p["lora_A"].shape == (r, d_in) and p["lora_B"].shape == (d_out, r)
        assert np.all(p["lora_B"] == 0.0)
        if init == "default":
            bound = 1.0 / np.sqrt(d_in)
            assert np.abs(p["lora_A"]).max() <= bound and np.abs(p["lora_A"]).max() > 0.99 * bound
            assert p["lora_A"].std() == pytest.approx(bound / np.sqrt(3.0), rel=0.03)
        else:
            assert p["lora_A"].std() == pytest.approx(1.0 / r, rel=0.03)
            assert abs(p["lora_A"].mean()) < 4.0 / r / np.sqrt(p["lora_A"].size)
    # peft "random" (init_lora_weights=False) keeps nn.Linear's init: B ~ U(+-1/sqrt(r)), B != 0.
    p = {k: to_numpy(v) for k, v in L.init_lora_params(d_in, d_out, r, "random", seed=5).items()}
    assert np.abs(p["lora_B"]).max() <= 1.0 / np.sqrt(r) and p["lora_B"].std() == pytest.approx(
        1.0 / np.sqrt(3.0 * r), rel=0.05)
    c = linear_case("float64")
    lora0 = {k: to_numpy(v) for k, v in L.init_lora_params(D_IN, D_OUT, R, "default", seed=1).items()}
    conv = {"numpy": lambda a: a, "jax": to_j, "torch": to_t}[backend]
    y = L.lora_linear(conv(c["x"]), conv(c["w"]), conv(c["b"]), conv(lora0), 16.0)
    assert_close(y, c["x"] @ c["w"].T + c["b"], "float64", what="default-init LoRA vs base layer")


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_only_on_the_lora_branch_same_mask_as_peft_training_mode(dtype):
    """peft's own nn.Dropout in training mode, after torch.manual_seed(s), draws the mask that
    torch_ref.lora_dropout_mask(seed=s) reads out; numpy and JAX given that mask must agree."""
    c = linear_case(dtype, seed=7)
    p, alpha, seed = 0.25, 8.0, 11
    model, _ = TL.peft_lora_linear(to_t(c["w"]), to_t(c["b"]), to_t(c["lora"]), alpha, dropout=p)
    model.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        ref = model(to_t(c["x"]))
    mask = to_numpy(TL.lora_dropout_mask(c["x"].shape, p, seed=seed, dtype=getattr(torch, dtype)))
    assert set(np.unique(mask)) <= {0.0, np.float32(1 / (1 - p)) if dtype == "float32" else 1 / (1 - p)}
    model.eval()
    with torch.no_grad():
        assert_not_noop(ref, model(to_t(c["x"])), dtype)  # dropout really changed the LoRA branch
    assert_close(NL.lora_linear(c["x"], c["w"], c["b"], c["lora"], alpha, dropout_mask=mask), ref, dtype,
                 what="numpy, same dropout mask as peft")
    assert_close(JL.lora_linear(to_j(c["x"]), to_j(c["w"]), to_j(c["b"]), to_j(c["lora"]), alpha,
                                dropout_mask=to_j(mask)), ref, dtype, what="jax, same dropout mask as peft")
    # Dropping every input of the branch leaves exactly the frozen layer: dropout never touches x W^T + b.
    zeros = np.zeros_like(c["x"])
    for y in (NL.lora_linear(c["x"], c["w"], c["b"], c["lora"], alpha, dropout_mask=zeros),
              JL.lora_linear(to_j(c["x"]), to_j(c["w"]), to_j(c["b"]), to_j(c["lora"]), alpha, dropout_mask=to_j(zeros)),
              TL.lora_linear(to_t(c["x"]), to_t(c["w"]), to_t(c["b"]), to_t(c["lora"]), alpha, dropout_mask=to_t(zeros))):
        assert_close(y, c["x"] @ c["w"].T + c["b"], dtype, what="all-dropped branch vs base layer")


def test_dropout_mask_expectation_is_one_in_every_backend():
    """Inverted dropout keeps the branch's expected value: E[mask] = (1-p) * 1/(1-p) = 1."""
    p, n = 0.3, 200_000
    for L in (NL, JL, TL):
        m = to_numpy(L.lora_dropout_mask((n,), p, seed=2))
        assert np.mean(m == 0.0) == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / n))
        assert m.mean() == pytest.approx(1.0, abs=4 * np.sqrt(p / (1 - p) / n))


# ----------------------------------------------------------------------------------------------
# Multi-head attention with LoRA on W_q and W_v.

D_MODEL, N_HEADS = 32, 4


def mha_case(dtype, targets=("q", "v"), seed=0, r=R):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((2, 9, D_MODEL)).astype(dtype),
        "kv": rng.standard_normal((2, 6, D_MODEL)).astype(dtype),
        "params": init_mha_params(D_MODEL, seed=seed, dtype=dtype),
        "lora": NL.init_lora_mha_params(D_MODEL, r, targets, "random", seed=seed + 1, dtype=dtype),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_separate_projection_mha_equals_nn_multiheadattention(dtype):
    """The peft-targetable reference layer is nn.MultiheadAttention, written with four Linear."""
    c = mha_case(dtype)
    mha = nn.MultiheadAttention(D_MODEL, N_HEADS, batch_first=True, dtype=getattr(torch, dtype)).eval()
    mha.load_state_dict(mha_params_to_torch(c["params"]))
    sep = TL.SeparateProjectionMHA.from_params(to_t(c["params"]), N_HEADS).eval()
    x, kv = to_t(c["x"]), to_t(c["kv"])
    causal = torch.from_numpy(make_causal_mask(9))
    with torch.no_grad():
        for q_in, kv_in, ours, theirs in ((x, x, None, None), (x, kv, None, None), (x, x, causal, ~causal)):
            ref_out, ref_w = mha(q_in, kv_in, kv_in, attn_mask=theirs, need_weights=True, average_attn_weights=False)
            out, w = sep(q_in, kv=kv_in, mask=ours)
            assert_close(out, ref_out, dtype, what="SeparateProjectionMHA vs nn.MultiheadAttention")
            assert_close(w, ref_w, dtype, what="weights")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("setting", ["self", "cross", "causal", "qkvo-rslora"])
def test_lora_mha_matches_peft(dtype, setting):
    targets = ("q", "k", "v", "o") if setting == "qkvo-rslora" else ("q", "v")
    c = mha_case(dtype, targets, seed=2)
    kv = c["kv"] if setting == "cross" else None
    mask = make_causal_mask(9) if setting == "causal" else None
    rs, alpha = setting == "qkvo-rslora", 8.0
    ref_out, ref_w = TL.lora_multihead_attention(to_t(c["x"]), to_t(c["params"]), to_t(c["lora"]), N_HEADS, alpha,
                                                 rs, kv=to_t(kv), mask=to_t(mask))
    base_out, _ = TL.SeparateProjectionMHA.from_params(to_t(c["params"]), N_HEADS)(
        to_t(c["x"]), kv=to_t(kv), mask=to_t(mask))
    assert_not_noop(ref_out, base_out.detach(), dtype)
    out, w = NL.lora_multihead_attention(c["x"], c["params"], c["lora"], N_HEADS, alpha, rs, kv=kv, mask=mask)
    assert_close(out, ref_out, dtype, what="numpy LoRA MHA vs peft")
    assert_close(w, ref_w, dtype, what="numpy LoRA MHA weights vs peft")
    out, w = JL.lora_multihead_attention(to_j(c["x"]), to_j(c["params"]), to_j(c["lora"]), N_HEADS, alpha, rs,
                                         kv=to_j(kv), mask=to_j(mask))
    assert_close(out, ref_out, dtype, what="jax LoRA MHA vs peft")
    assert_close(w, ref_w, dtype, what="jax LoRA MHA weights vs peft")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lora_mha_merged_equals_unmerged_in_all_three(dtype):
    from jax_impl.multihead import multihead_attention as j_mha
    from numpy_impl.multihead import multihead_attention as n_mha
    from torch_ref.multihead import multihead_attention as t_mha

    c = mha_case(dtype, seed=4)
    alpha = 4.0
    ref_merged = TL.merge_lora_mha(to_t(c["params"]), to_t(c["lora"]), alpha)  # peft merge_and_unload
    for name, L, conv, mha in (("numpy", NL, lambda a: a, n_mha), ("jax", JL, to_j, j_mha), ("torch", TL, to_t, t_mha)):
        merged = L.merge_lora_mha(conv(c["params"]), conv(c["lora"]), alpha)
        for k in ref_merged:
            assert_close(merged[k], ref_merged[k], dtype, what=f"{name} merged {k} vs peft")
        unmerged_out, _ = L.lora_multihead_attention(conv(c["x"]), conv(c["params"]), conv(c["lora"]), N_HEADS, alpha)
        merged_out, _ = mha(conv(c["x"]), merged, N_HEADS)  # the project's plain MHA on merged weights
        assert_close(merged_out, unmerged_out, dtype, what=f"{name} merged vs unmerged MHA")
    # W_k and W_o carry no adapter: merging leaves them bit-identical.
    assert np.array_equal(to_numpy(ref_merged["w_k"]), c["params"]["w_k"])


# ----------------------------------------------------------------------------------------------
# The hand-written backward (NumPy) against torch autograd through peft, and finite differences.

@pytest.mark.parametrize("with_dropout", [False, True])
@pytest.mark.parametrize("use_rslora", [False, True])
def test_numpy_lora_backward_matches_torch_autograd_through_peft(with_dropout, use_rslora):
    c = linear_case("float64", seed=9)
    alpha, p, seed = 8.0, 0.2, 3
    model, layer = TL.peft_lora_linear(to_t(c["w"]), to_t(c["b"]), to_t(c["lora"]), alpha, use_rslora,
                                       dropout=p if with_dropout else 0.0)
    model.train()
    x = to_t(c["x"]).requires_grad_(True)
    dy = np.random.default_rng(1).standard_normal((3, 7, D_OUT))
    torch.manual_seed(seed)
    (model(x) * to_t(dy)).sum().backward()  # loss = <y, dy>, so dL/dy = dy
    # peft freezes the base layer: autograd forms no gradient for W and b at all.
    assert layer.base_layer.weight.grad is None and layer.base_layer.bias.grad is None
    mask = TL.lora_dropout_mask(c["x"].shape, p, seed=seed).numpy() if with_dropout else None
    y, cache = lora_linear_forward(c["x"], c["w"], c["b"], c["lora"], alpha, use_rslora, dropout_mask=mask)
    grads = lora_linear_backward(dy, cache)
    assert set(grads) == {"lora_A", "lora_B", "x"}
    refs = {"lora_A": layer.lora_A["default"].weight.grad, "lora_B": layer.lora_B["default"].weight.grad, "x": x.grad}
    for k, ref in refs.items():
        ref = ref.numpy()
        assert np.linalg.norm(grads[k] - ref) <= 1e-9 * np.linalg.norm(ref), k  # the 1e-9 relative
        assert_close(grads[k], ref, "float64", kind="grad", what=f"d{k}")


def test_numpy_lora_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    d_in, d_out, r = 5, 4, 2
    x, w, b = rng.standard_normal((3, d_in)), rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out)
    lora = NL.init_lora_params(d_in, d_out, r, "random", seed=2)
    dy = rng.standard_normal((3, d_out))
    alpha, eps = 3.0, 1e-6

    def loss(lo, xx):
        return float(np.sum(NL.lora_linear(xx, w, b, lo, alpha) * dy))

    grads = lora_linear_backward(dy, lora_linear_forward(x, w, b, lora, alpha)[1])
    for k in ("lora_A", "lora_B"):
        fd = np.zeros_like(lora[k])
        for i in np.ndindex(fd.shape):
            plus, minus = {n: v.copy() for n, v in lora.items()}, {n: v.copy() for n, v in lora.items()}
            plus[k][i] += eps
            minus[k][i] -= eps
            fd[i] = (loss(plus, x) - loss(minus, x)) / (2 * eps)  # central difference: error O(eps^2)
        np.testing.assert_allclose(grads[k], fd, rtol=1e-6, atol=1e-8)
    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        fd[i] = (loss(lora, xp) - loss(lora, xm)) / (2 * eps)
    np.testing.assert_allclose(grads["x"], fd, rtol=1e-6, atol=1e-8)


def test_demo_fits_a_low_rank_change_training_only_a_and_b():
    out = NL.fit_low_rank_change(d_in=32, d_out=24, r=3, target_rank=3, steps=200, seed=1)
    losses = out["losses"]
    # Step 0 (B = 0) is the target change's own energy: mean((x Delta^T)^2), computed independently.
    x, delta = out["x"], out["target_delta"]
    assert np.linalg.matrix_rank(delta) == 3
    assert losses[0] == pytest.approx(np.mean((x @ delta.T) ** 2), rel=1e-12)
    assert losses[-1] < 1e-3 * losses[0] and out["delta_error"] < 0.05
    assert out["trainable_params"] == 3 * (32 + 24)


# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, fragment", [
    (lambda L, conv: L.init_lora_params(8, 6, 7), "r: expected a rank <= min(d_in, d_out) = 6"),
    (lambda L, conv: L.init_lora_params(8, 6, 2, init="xavier"), "init: expected one of default, gaussian, random"),
    (lambda L, conv: L.lora_scaling(4, -1.0), "alpha: expected a positive finite number, got -1.0"),
    (lambda L, conv: L.lora_linear(conv(np.ones((2, 5))), conv(np.ones((3, 5))), None,
                                   conv({"lora_A": np.ones((2, 4)), "lora_B": np.ones((3, 2))}), 1.0),
     "lora['lora_A']: expected shape (*, 5), got (2, 4)"),
    (lambda L, conv: L.lora_multihead_attention(conv(np.ones((1, 3, 8))), conv(init_mha_params(8)),
                                                conv({"x": {"lora_A": np.ones((2, 8)), "lora_B": np.ones((8, 2))}}),
                                                2, 1.0), "targets: expected distinct names from q, k, v, o"),
    (lambda L, conv: L.lora_dropout_mask((3,), 1.0), "p: expected a dropout probability in [0, 1), got 1.0"),
])
def test_bad_input_reads_the_same_in_all_three(call, fragment):
    for L, conv in ((NL, lambda a: a), (JL, to_j), (TL, to_t)):
        with pytest.raises(InputError, match=None) as e:
            call(L, conv)
        assert fragment in str(e.value), (L.__name__, str(e.value))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_merge_adapters_folds_every_pair_in_every_backend(dtype):
    """merge_adapters on a dict of two weights, one adapted (r=3) and one not: the adapted weight is
    W + (alpha / r) B A written out here, the other is untouched, and the scaling is alpha / r; torch's
    goes through peft's own merge."""
    rng = np.random.default_rng(0)
    params = {"q": rng.standard_normal((6, 5)).astype(dtype), "k": rng.standard_normal((6, 5)).astype(dtype)}
    adapters = {"q.lora_A": rng.standard_normal((3, 5)).astype(dtype),
                "q.lora_B": rng.standard_normal((6, 3)).astype(dtype)}
    expected = params["q"].astype(np.float64) + (8.0 / 3) * (adapters["q.lora_B"].astype(np.float64)
                                                            @ adapters["q.lora_A"].astype(np.float64))
    for mod in (NL, JL, TL):
        merged, scale = mod.merge_adapters(params, adapters, 8.0)
        assert sorted(merged) == ["k", "q"] and scale == {"q": 8.0 / 3}
        assert_close(to_numpy(merged["q"]), expected, dtype, what=f"{mod.__name__} merged q")
        np.testing.assert_array_equal(to_numpy(merged["k"]), params["k"])
