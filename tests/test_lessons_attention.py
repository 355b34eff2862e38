"""The attention lessons' numbers against independent computations (torch, jax, closed forms).

Each lesson's compute() runs once per module; the tests recompute what the lesson claims with a
different tool rather than reading the lesson's own verdicts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

# Exercise C's data, copied from exercises.md (inputs, not answers).
K_C = np.array([[0.47, 0.65, 0.60], [0.64, 0.50, -0.59], [-0.03, -0.48, -0.88], [0.43, -0.83, 0.35]])
V_C = np.array([[-0.07, -0.88, 0.47], [0.37, -0.93, -0.07], [-0.25, -0.75, 0.61], [0.94, 0.20, 0.28]])
TARGETS_C = {1: V_C[:1], 2: V_C, 3: V_C.mean(0, keepdims=True), 4: V_C[:2].mean(0, keepdims=True),
             5: V_C[:3].mean(0, keepdims=True), 6: V_C[2:3]}


def torch_attention(q, k, v, scale=1.0):
    q, k, v = (torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in (q, k, v))
    return (torch.softmax(scale * q @ k.T, dim=-1) @ v).numpy()


# ------------------------------------------------------------------------------- craft-queries

@pytest.fixture(scope="module")
def craft():
    from triptych.lessons import craft_queries

    return {t["task"]: t for t in craft_queries.compute()["tasks"]}


@pytest.mark.parametrize("task", [1, 2, 3, 4, 5, 6])
def test_crafted_queries_reach_targets_in_torch(craft, task):
    t = craft[task]
    out = torch_attention(t["query"], t["keys"], V_C)
    err = np.max(np.abs(out - TARGETS_C[task]))
    assert err <= 1e-3
    assert t["max_error"] == pytest.approx(err, abs=1e-14)
    assert all(e <= 1e-3 for e in t["backends"].values())


def test_replacement_keys_follow_the_rules(craft):
    q4 = np.array(craft[4]["query"])
    for task in (5, 6):
        keys = np.array(craft[task]["keys"])
        np.testing.assert_array_equal(np.delete(keys, 2, axis=0), np.delete(K_C, 2, axis=0))  # other keys kept
        np.testing.assert_array_equal(np.array(craft[task]["query"]), q4)  # "keeping q of (4)"
    assert np.linalg.norm(craft[6]["keys"][2]) == pytest.approx(1.0, abs=1e-14)
    for task in (1, 2, 3, 4):
        np.testing.assert_array_equal(np.array(craft[task]["keys"]), K_C)


def test_mean_of_all_values_is_exact_with_zero_query(craft):
    t = craft[3]
    assert np.max(np.abs(t["query"])) < 1e-12
    assert t["max_error"] < 1e-15 and t["exact"]["exact"]
    assert not any(craft[n]["exact"]["exact"] for n in (1, 2, 4, 5, 6))


def test_task1_error_vs_scale_matches_closed_form(craft):
    # Gaps of S to every other token: w_0 = 1 / (1 + 3 e^-S), others e^-S / (1 + 3 e^-S), so
    # out - v_0 = e^-S / (1 + 3 e^-S) * sum_j (v_j - v_0).
    spread = np.max(np.abs((V_C[1:] - V_C[0]).sum(0)))
    for row in craft[1]["scale_table"]:
        e = math.exp(-row["S"])
        assert row["max_error"] == pytest.approx(e / (1 + 3 * e) * spread, rel=1e-6, abs=1e-14)


# ------------------------------------------------------------------------------- argmax-attention

@pytest.fixture(scope="module")
def argmax():
    from triptych.lessons import argmax_attention

    return argmax_attention.compute()


def test_argmax_scores_and_output(argmax):
    K = np.array([[0, 1, 2], [1, 1, 2], [-1, 1, -2], [0, -1, -2]], dtype=float)
    V = np.array([[3, 2, -4], [3, -2, 4], [3, 2, 0], [3, 2, 4]], dtype=float)
    q = np.array([-2, 1, 1], dtype=float)
    np.testing.assert_array_equal(argmax["scores"], K @ q)
    np.testing.assert_array_equal(argmax["output"], V[np.argmax(K @ q)])


def test_argmax_gradients_vanish_for_q_and_k_only(argmax):
    hg = argmax["hard_grad"]
    assert hg["torch"]["q"] is None and hg["torch"]["k"] is None
    assert not np.any(hg["jax"]["q"]) and not np.any(hg["jax"]["k"]) and not np.any(hg["finite_difference_q"])
    # d |w V - g|^2 / dV = outer(w, 2 (w V - g)) for the one-hot w: the values do learn.
    w, out, goal = np.array(argmax["weights"]), np.array(argmax["output"]), np.array([3.0, 2.0, 4.0])
    expected = np.outer(w, 2 * (out - goal))
    np.testing.assert_allclose(hg["torch"]["v"], expected, atol=1e-12)
    np.testing.assert_allclose(hg["jax"]["v"], expected, atol=1e-12)


def test_softmax_gradient_matches_finite_differences(argmax):
    K, V = np.array(argmax["keys"]), np.array(argmax["values"])
    q, goal = np.array(argmax["query"]), np.array(argmax["goal"])

    def loss(qq):
        return float(np.sum((torch_attention(qq[None], K, V)[0] - goal) ** 2))

    h = 1e-6
    fd = np.array([(loss(q + h * e) - loss(q - h * e)) / (2 * h) for e in np.eye(3)])
    for g in (argmax["soft_grad"]["torch"]["q"], argmax["soft_grad"]["jax"]["q"], argmax["soft_grad"]["numpy_q"]):
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)
    assert np.linalg.norm(fd) > 1.0


def test_softmax_with_falling_temperature_approaches_argmax(argmax):
    K, V, q = np.array(argmax["keys"]), np.array(argmax["values"]), np.array(argmax["query"])
    rows = argmax["temperature"]
    for r in rows:
        out = torch_attention(q[None], K, V, scale=r["beta"])[0]
        assert r["distance_to_argmax"] == pytest.approx(np.max(np.abs(out - argmax["output"])), abs=1e-14)
    assert rows[-1]["distance_to_argmax"] < 1e-12 and rows[-1]["grad_q_norm"] < 1e-12


# ------------------------------------------------------------------------------- subspace

@pytest.fixture(scope="module")
def subspace():
    from triptych.lessons import subspace

    return subspace, subspace.compute()


def test_projector_reads_v_a_out_of_the_average(subspace):
    mod, result = subspace
    s = mod.setup(result["seed"])
    A, B, v_a, v_b = (torch.as_tensor(s[k]) for k in ("A", "B", "v_a", "v_b"))
    P = A @ A.T
    assert torch.allclose(A.T @ A, torch.eye(A.shape[1], dtype=A.dtype), atol=1e-14)
    assert torch.max(torch.abs(A.T @ B)) < 1e-14
    assert torch.max(torch.abs(P @ P - P)) < 1e-14
    err = torch.max(torch.abs(2 * P @ ((v_a + v_b) / 2) - v_a)).item()
    assert err < 1e-14 and result["extraction_error"] < 1e-14
    # v_a really lies in span(A) and v_b in span(B): projecting onto the other subspace gives zero.
    assert torch.max(torch.abs(B @ B.T @ v_a)) < 1e-14 and torch.max(torch.abs(P @ v_b)) < 1e-14


def test_averaging_query_error_vs_scale(subspace):
    mod, result = subspace
    s = mod.setup(result["seed"])
    keys, values = s["keys"], s["values"]
    avg = (values[0] + values[1]) / 2
    for row in result["scale_table"]:
        q = row["S"] * (keys[0] + keys[1])
        err = np.max(np.abs(torch_attention(q[None], keys, values)[0] - avg))
        # Once e^-S falls below rounding (S >= 32) both sides are float64 noise of O(1e-15).
        assert row["error"] == pytest.approx(err, abs=1e-14)
        assert row["predicted"] == pytest.approx(err, rel=1e-6, abs=1e-14)
    assert result["two_token_error"] < 1e-15


# ------------------------------------------------------------------------------- decomposed-attention

@pytest.mark.parametrize("n_head,causal", [(1, False), (1, True), (2, False), (2, True)])
def test_decomposed_lines_match_torch_multihead_attention(n_head, causal):
    from triptych.common.params import mha_params_to_torch
    from triptych.lessons import decomposed_attention as da

    x, params = da.inputs()
    mine = da.run_lines(x, params, n_head, causal)
    mha = torch.nn.MultiheadAttention(da.C, n_head, batch_first=True, dtype=torch.float64)
    mha.load_state_dict(mha_params_to_torch(params))
    mask = None if not causal else ~torch.ones(da.T, da.T, dtype=torch.bool).tril()  # torch: True = blocked
    out, w = mha(*(torch.from_numpy(x),) * 3, attn_mask=mask, average_attn_weights=False)
    np.testing.assert_allclose(mine["out"], out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(mine["weights"], w.detach().numpy(), atol=1e-12)


def test_post_softmax_masking_loses_mass_and_leaks():
    from triptych.lessons import decomposed_attention as da

    m = da.compute()["masking"]
    s = torch.tensor(m["scores"])
    full = torch.softmax(s, -1)
    tril = torch.ones_like(full).tril()
    np.testing.assert_allclose(m["row_sums_wrong"], (full * tril).sum(-1).numpy(), atol=1e-14)
    np.testing.assert_allclose(m["row_sums_right"], 1.0, atol=1e-14)
    assert all(lost > 0 for lost in m["leaked"][:-1])
    assert m["past_change_right"] == 0.0 and m["past_change_wrong"] > 1e-3
    np.testing.assert_allclose(m["grad_row0_wrong_numpy"], m["grad_row0_wrong_torch"], atol=1e-14)


# ------------------------------------------------------------------------------- mlm-toy

def test_mlm_toy_against_closed_form():
    from triptych.lessons import mlm_toy

    r = mlm_toy.compute()
    z = [0.5, 0.1, 3.0, 0.2, 1.0]
    total = sum(math.exp(v) for v in z)
    p_mat = math.exp(3.0) / total
    assert r["p_target"] == pytest.approx(p_mat, rel=1e-14)
    for loss in (r["loss"], r["loss_logsumexp"], *r["backends"].values()):
        assert loss == pytest.approx(-math.log(p_mat), rel=1e-14)
    expected_grad = [math.exp(v) / total - (i == 2) for i, v in enumerate(z)]
    for g in r["grad"].values():
        np.testing.assert_allclose(g, expected_grad, atol=1e-15)
