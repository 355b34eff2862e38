"""RoPE in both channel layouts: rotations checked by hand, against Hugging Face's
LlamaRotaryEmbedding + apply_rotary_pos_emb with (B, T) position ids, the row permutation of W_q and
W_k that turns one layout into the other, the hand-written backward against torch autograd, jax.grad
and finite differences, errors worded alike in the three backends, and hypothesis over shapes and
positions."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.tolerances import assert_close
from jax_impl import positional as jp
from numpy_impl import positional as npos
from parity_tests.test_grads import _check_all, _torch_grads
from torch_ref import positional as tp

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
F64 = np.float64
LAYOUTS = ["half", "interleaved"]


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _all_backends(x, positions=None, **kw):
    """apply_rope in the three backends, as NumPy arrays."""
    tpos = None if positions is None else _t(positions)
    return {"numpy": npos.apply_rope(x, positions, **kw),
            "jax": np.asarray(jp.apply_rope(jnp.asarray(x), positions, **kw)),
            "torch": tp.apply_rope(_t(x), tpos, **kw).numpy()}


def _half_to_interleaved_channels(D):
    """Channel order of the interleaved layout in terms of the half one: 0, D/2, 1, D/2 + 1, ..."""
    return np.stack([np.arange(D // 2), np.arange(D // 2) + D // 2], axis=-1).reshape(-1)


# ---------------------------------------------------------------- by hand
def _rotate(a, b, angle):
    return a * np.cos(angle) - b * np.sin(angle), b * np.cos(angle) + a * np.sin(angle)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_d4_rotations_by_hand(layout):
    """D = 4, base 10000: two frequencies, 1 and 10000^(-1/2) = 0.01. "half" rotates the channel
    pairs (0, 2) and (1, 3), "interleaved" the pairs (0, 1) and (2, 3)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    positions = np.array([[0, 5, 9], [100, 101, 4000]])
    pairs = [(0, 2), (1, 3)] if layout == "half" else [(0, 1), (2, 3)]
    expected = np.empty_like(x)
    for (i, j), freq in zip(pairs, (1.0, 0.01)):
        expected[..., i], expected[..., j] = _rotate(x[..., i], x[..., j], positions * freq)
    for who, out in _all_backends(x, positions, layout=layout).items():
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12, err_msg=who)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_position_zero_is_the_identity_and_norms_are_kept(layout):
    x = np.random.default_rng(1).standard_normal((2, 6, 8))
    for who, out in _all_backends(x, np.zeros(6, int), layout=layout).items():
        np.testing.assert_array_equal(out, x, err_msg=who)  # cos 0 = 1, sin 0 = 0 exactly
    rotated = npos.apply_rope(x, np.arange(6) * 37, layout=layout)
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-14)


def test_the_default_layout_is_half():
    """Existing callers (the GPT's RoPE, the exercises) pass no layout and must keep Llama's."""
    x = np.random.default_rng(2).standard_normal((3, 8))
    np.testing.assert_array_equal(npos.apply_rope(x), npos.apply_rope(x, layout="half"))
    assert not np.allclose(npos.apply_rope(x), npos.apply_rope(x, layout="interleaved"))


# ---------------------------------------------------------------- Hugging Face
def test_half_layout_matches_hugging_face_with_batched_position_ids():
    """LlamaRotaryEmbedding(x, position_ids (B, T)) -> cos, sin (B, T, D), then apply_rotary_pos_emb
    on (B, H, T, D) queries, as LlamaAttention does for sequences at different offsets."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 4, 6, 16)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4, 5], [40, 41, 42, 43, 44, 45]])
    rot = LlamaRotaryEmbedding(LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=256))
    cos, sin = rot(_t(q), _t(positions))
    ref, _ = apply_rotary_pos_emb(_t(q), _t(q), cos, sin)  # unsqueeze_dim=1: over the heads
    for who, out in _all_backends(q, positions).items():
        assert out.dtype == np.float32, who
        # HF builds pos * inv_freq in float32 (about 3e-6 off at pos 45), ours in float64.
        np.testing.assert_allclose(out, ref.numpy(), atol=2e-5, err_msg=who)


# ---------------------------------------------------------------- one layout from the other
@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (6, 1)])
def test_permuting_wq_wk_rows_turns_half_into_interleaved(n_heads, n_kv_heads):
    """A Hugging Face checkpoint (half) and its GGUF / Meta form (interleaved) compute the same
    attention: the rows of W_q (per query head) and W_k (per KV head) are permuted, nothing else."""
    rng = np.random.default_rng(4)
    B, T, d, D = 2, 7, 24, 8
    x = rng.standard_normal((B, T, d))
    w_q, w_k = rng.standard_normal((n_heads * D, d)), rng.standard_normal((n_kv_heads * D, d))
    positions = np.array([np.arange(T), np.arange(T) + 100])

    def rotated_heads(w, h, layout):  # (B, T, d) -> (B, h, T, D), rotated
        return npos.apply_rope((x @ w.T).reshape(B, T, h, D).transpose(0, 2, 1, 3), positions, layout=layout)

    q_half, k_half = rotated_heads(w_q, n_heads, "half"), rotated_heads(w_k, n_kv_heads, "half")
    q_int = rotated_heads(npos.rope_half_to_interleaved(w_q, n_heads), n_heads, "interleaved")
    k_int = rotated_heads(npos.rope_half_to_interleaved(w_k, n_kv_heads), n_kv_heads, "interleaved")
    perm = _half_to_interleaved_channels(D)
    # Exactly the same numbers, only in another channel order: the same products, pair by pair.
    np.testing.assert_array_equal(q_int, q_half[..., perm])
    np.testing.assert_array_equal(k_int, k_half[..., perm])
    group = n_heads // n_kv_heads  # query head h reads KV head h // group
    scores = {name: q @ np.repeat(k, group, axis=1).swapaxes(-1, -2) for name, (q, k) in
              {"half": (q_half, k_half), "interleaved": (q_int, k_int)}.items()}
    assert_close(scores["interleaved"], scores["half"], F64, what="attention scores")
    # Not a vacuous pass: interleaved RoPE on the unpermuted weights is a different attention.
    wrong = rotated_heads(w_q, n_heads, "interleaved") @ np.repeat(
        rotated_heads(w_k, n_kv_heads, "interleaved"), group, axis=1).swapaxes(-1, -2)
    assert np.abs(wrong - scores["half"]).max() > 1.0
    # Going back gives the Hugging Face weights again, bit for bit.
    np.testing.assert_array_equal(npos.rope_interleaved_to_half(npos.rope_half_to_interleaved(w_q, n_heads), n_heads), w_q)


@pytest.mark.parametrize("shape", [(16,), (32, 5), (24, 3, 2)])
def test_row_permutations_agree_with_llama_cpp_and_hugging_face(shape):
    """torch_ref's half -> interleaved is llama.cpp's convert_hf_to_gguf permute, its inverse is
    HF's own GGUF loader (LlamaTensorProcessor._reverse_permute_weights); NumPy and JAX match both."""
    n_heads = 4
    w = np.random.default_rng(5).standard_normal(shape)
    D = shape[0] // n_heads
    by_hand = w.reshape(n_heads, D, *shape[1:])[:, _half_to_interleaved_channels(D)].reshape(shape)
    for name in ("rope_half_to_interleaved", "rope_interleaved_to_half"):
        ref = getattr(tp, name)(_t(w), n_heads).numpy()
        np.testing.assert_array_equal(getattr(npos, name)(w, n_heads), ref, err_msg=name)
        np.testing.assert_array_equal(np.asarray(getattr(jp, name)(jnp.asarray(w), n_heads)), ref, err_msg=name)
    np.testing.assert_array_equal(npos.rope_half_to_interleaved(w, n_heads), by_hand)
    np.testing.assert_array_equal(tp.rope_interleaved_to_half(_t(by_hand), n_heads).numpy(), w)


# ---------------------------------------------------------------- hand-written backward
POSITIONS = {"default": None, "(T,)": np.array([3, 7, 8, 20]), "(B, T)": np.array([[0, 1, 2, 3], [50, 51, 52, 90]])}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", list(POSITIONS))
def test_rope_backward(layout, kind):
    positions = POSITIONS[kind]
    r = np.random.default_rng(6)
    inp = {"x": r.standard_normal((2, 3, 4, 6))}
    G = r.standard_normal((2, 3, 4, 6))
    ours = {"x": npos.apply_rope_backward(G, positions, layout=layout)}
    tpos = None if positions is None else _t(positions)
    _check_all(ours, inp, ["x"], G, lambda x: npos.apply_rope(x, positions, layout=layout),
               lambda x: tp.apply_rope(x, tpos, layout=layout),  # HF's function / the complex rotation
               lambda x: jp.apply_rope(x, positions, layout=layout))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rope_backward_float32_vs_torch(layout):
    r = np.random.default_rng(7)
    x, G = (r.standard_normal((2, 4, 33, 64)).astype(np.float32) for _ in range(2))
    positions = r.integers(0, 8192, size=(2, 33))
    dx = npos.apply_rope_backward(G, positions, layout=layout)
    ref = _torch_grads(lambda x: tp.apply_rope(x, _t(positions), layout=layout), {"x": x}, ["x"], G)
    assert dx.dtype == np.float32
    assert_close(dx, ref["x"], np.float32, "grad", what="dx")


# ---------------------------------------------------------------- hypothesis
@st.composite
def rope_problem(draw):
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
    T, D = draw(st.integers(1, 9)), 2 * draw(st.integers(1, 8))
    kind = draw(st.sampled_from(["default", "(T,)", "(B, T)"] if lead else ["default", "(T,)"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    positions = {"default": None, "(T,)": rng.integers(0, 10_000, T),
                 "(B, T)": rng.integers(0, 10_000, (lead[0], 1)) + np.arange(T) if lead else None}[kind]
    base = draw(st.sampled_from([10000.0, 500000.0, 100.0]))
    return rng.standard_normal((*lead, T, D)), positions, base, draw(st.sampled_from(LAYOUTS)), rng


@SETTINGS
@given(rope_problem())
def test_random_shapes_and_positions_vs_torch(problem):
    """Values and the hand-written gradient vs torch (eager: new shapes cost nothing)."""
    x, positions, base, layout, rng = problem
    tpos = None if positions is None else _t(positions)
    assert_close(npos.apply_rope(x, positions, base, layout), tp.apply_rope(_t(x), tpos, base, layout), F64,
                 what="apply_rope")
    G = rng.standard_normal(x.shape)
    ref = _torch_grads(lambda x: tp.apply_rope(x, tpos, base, layout), {"x": x}, ["x"], G)
    assert_close(npos.apply_rope_backward(G, positions, base, layout), ref["x"], F64, "grad", what="dx")


# Few shapes, so that jit compiles each once; positions, base and values are drawn anew every time.
@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(5, 2), (2, 3, 4, 8)]), st.sampled_from(LAYOUTS), st.booleans(), st.integers(0, 2**31 - 1))
def test_random_positions_jax(shape, layout, batched, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    T = shape[-2]
    positions = rng.integers(0, 100_000, (shape[0], T) if batched and len(shape) > 2 else T)
    ref = tp.apply_rope(_t(x), _t(positions), layout=layout)
    assert_close(jp.apply_rope(jnp.asarray(x), positions, layout=layout), ref, F64, what="jax apply_rope")


@SETTINGS
@given(st.sampled_from(LAYOUTS), st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 5000),
       st.integers(0, 2**31 - 1))
def test_scores_depend_only_on_the_distance(layout, m, n, shift, seed):
    q, k = np.random.default_rng(seed).standard_normal((2, 1, 1, 8))
    def score(i, j):
        return float(npos.apply_rope(q, np.array([i]), layout=layout)[0, 0]
                     @ npos.apply_rope(k, np.array([j]), layout=layout)[0, 0])
    assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-9)


# ---------------------------------------------------------------- bad input, same words everywhere
X = np.random.default_rng(8).standard_normal((2, 3, 5, 8))
BACKENDS = {"numpy": (npos, np.asarray), "jax": (jp, jnp.asarray), "torch": (tp, lambda a: torch.from_numpy(np.asarray(a)))}
BAD_CALLS = {
    "unknown layout": (lambda m, c: m.apply_rope(c(X), layout="neox"),
                       "layout: expected one of 'half', 'interleaved', got 'neox'"),
    "positions of the wrong length": (lambda m, c: m.apply_rope(c(X), c(np.arange(4))),
                                      "positions: expected length 5 to match x's sequence axis (T), got 4"),
    "(B, T) positions for another batch": (lambda m, c: m.apply_rope(c(X), c(np.zeros((3, 5), np.int64))),
                                           "positions: expected batch size 2 to match x's batch axis (B), got 3"),
    "(B, T) positions for a 2-D x": (lambda m, c: m.apply_rope(c(X[0, 0]), c(np.zeros((1, 5), np.int64))),
                                     "x: expected at least 3 dimensions (B, ..., T, D) for (B, T) positions, got shape (5, 8)"),
    "3-D positions": (lambda m, c: m.apply_rope(c(X), c(np.zeros((2, 1, 5), np.int64))),
                      "positions: expected a 1 or 2-D array (T,) or (B, T), got shape (2, 1, 5)"),
    "odd head size, interleaved": (lambda m, c: m.apply_rope(c(X[..., :7]), layout="interleaved"),
                                   "d_head: expected an even size (RoPE pairs sin/cos channels), got 7"),
    "integer x": (lambda m, c: m.apply_rope(c(np.ones((5, 4), np.int64))),
                  "x: expected a floating-point array, got dtype int64"),
    "rows not n_heads heads of even size": (lambda m, c: m.rope_half_to_interleaved(c(np.ones((12, 4))), 4),
                                            "w: expected a first axis of n_heads=4 heads of even size, got shape (12, 4)"),
    "n_heads of 0": (lambda m, c: m.rope_interleaved_to_half(c(np.ones((12, 4))), 0),
                     "n_heads: expected a positive integer, got 0"),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("what", list(BAD_CALLS))
def test_bad_input_message_is_the_same_in_every_backend(backend, what):
    call, message = BAD_CALLS[what]
    mod, conv = BACKENDS[backend]
    with pytest.raises(InputError) as info:
        call(mod, conv)
    assert str(info.value) == message
