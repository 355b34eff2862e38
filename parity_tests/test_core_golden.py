"""Values a person can check by hand, round trips through torch's formats, and the JAX specifics
(float64 really is float64; jit and non-jit agree; gradients through fully masked rows are finite)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import jax_impl  # noqa: F401
from triptych.common.params import init_mha_params, mha_params_from_torch, mha_params_to_torch
from triptych.common.tolerances import assert_close
from jax_impl import attention as ja, masks as jmk, multihead as jm, positional as jp
from numpy_impl import attention as na, masks as nmk, multihead as nm, positional as np_
from torch_ref import attention as ta, masks as tmk, multihead as tm, positional as tp

RNG = np.random.default_rng(1234)


# ---------------------------------------------------------------- hand-checkable values
@pytest.mark.parametrize("pos", [np_, jp, tp])
def test_sinusoidal_position_zero_is_0101(pos):
    row0 = np.asarray(pos.sinusoidal_encoding(10, 8))[0]
    np.testing.assert_array_equal(row0, [0, 1, 0, 1, 0, 1, 0, 1])


def test_sinusoidal_matches_the_formula_at_a_hand_picked_entry():
    # PE[pos=3, 2i=2] = sin(3 / 10000^(2/8)) = sin(0.3); PE[3, 3] = cos(0.3)
    pe = np_.sinusoidal_encoding(10, 8)
    assert pe[3, 2] == pytest.approx(math.sin(3 / 10000 ** 0.25), abs=1e-15)
    assert pe[3, 3] == pytest.approx(math.cos(3 / 10000 ** 0.25), abs=1e-15)


@pytest.mark.parametrize("att, conv", [(na, np.asarray), (ja, jnp.asarray), (ta, torch.from_numpy)])
def test_single_allowed_key_returns_exactly_its_value_row(att, conv):
    q, k, v = (RNG.standard_normal((1, 4, 3)) for _ in range(3))
    k, v = RNG.standard_normal((1, 5, 3)), RNG.standard_normal((1, 5, 3))
    mask = np.zeros((4, 5), dtype=bool)
    mask[:, 2] = True
    out, w = att.scaled_dot_product_attention(conv(q), conv(k), conv(v), conv(mask))
    np.testing.assert_array_equal(np.asarray(out)[0], np.repeat(v[0, 2:3], 4, axis=0))
    np.testing.assert_array_equal(np.asarray(w)[0, :, 2], 1.0)


@pytest.mark.parametrize("att, conv", [(na, np.asarray), (ja, jnp.asarray), (ta, torch.from_numpy)])
def test_zero_query_gives_uniform_weights_and_the_mean_value(att, conv):
    q = np.zeros((2, 3, 4))
    k, v = RNG.standard_normal((2, 6, 4)), RNG.standard_normal((2, 6, 4))
    out, w = att.scaled_dot_product_attention(conv(q), conv(k), conv(v))
    np.testing.assert_allclose(np.asarray(w), 1 / 6, rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.asarray(out), np.broadcast_to(v.mean(1, keepdims=True), (2, 3, 4)), atol=1e-15)


@pytest.mark.parametrize("att, conv", [(na, np.asarray), (ja, jnp.asarray), (ta, torch.from_numpy)])
def test_softmax_survives_logits_of_1e6(att, conv):
    x = np.array([[1e6, 1e6 - 1.0, -1e6]])
    got = np.asarray(att.softmax(conv(x)))
    e = 1 / (1 + math.exp(-1.0))
    np.testing.assert_allclose(got, [[e, 1 - e, 0.0]], atol=1e-15)


@pytest.mark.parametrize("mk, conv", [(nmk, np.asarray), (jmk, np.asarray), (tmk, lambda t: t.numpy())])
def test_causal_mask_with_offset_and_padding_by_hand(mk, conv):
    np.testing.assert_array_equal(conv(mk.make_causal_mask(2, 4)), [[1, 0, 0, 0], [1, 1, 0, 0]])
    # KV-cache alignment: the 2 queries are the last 2 of 4 positions.
    np.testing.assert_array_equal(conv(mk.make_causal_mask(2, 4, offset=2)), [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(conv(mk.make_key_padding_mask([3, 0], 4)), [[1, 1, 1, 0], [0, 0, 0, 0]])


def test_torch_sdpa_is_causal_agrees_with_our_causal_mask_when_t_q_differs_from_t_k():
    q = torch.randn(1, 1, 3, 4, dtype=torch.float64)
    k = v = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    ours = F.scaled_dot_product_attention(q, k, v, attn_mask=tmk.make_causal_mask(3, 5))
    assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), "float64")


def test_mask_adapters_round_trip_and_match_torch_mha_semantics():
    ours = RNG.random((2, 3, 4)) < 0.5
    torch_style = nmk.to_torch_mha_mask(ours)
    np.testing.assert_array_equal(torch_style, ~ours)
    np.testing.assert_array_equal(nmk.from_torch_mha_mask(torch_style), ours)
    np.testing.assert_array_equal(np.asarray(jmk.from_torch_mha_mask(jmk.to_torch_mha_mask(jnp.asarray(ours)))), ours)
    t = torch.from_numpy(ours)
    assert torch.equal(tmk.from_torch_mha_mask(tmk.to_torch_mha_mask(t)), t)
    # key_padding_mask through nn.MultiheadAttention (True = padding) equals our mask (True = real key).
    lengths = [4, 2]
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    kv = torch.randn(2, 4, 8, dtype=torch.float64)
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64).eval()
    ref, _ = mha(x, kv, kv, key_padding_mask=tmk.to_torch_mha_mask(tmk.make_key_padding_mask(lengths, 4)))
    pad = nmk.padding_to_attention_mask(nmk.make_key_padding_mask(lengths, 4))
    got, _ = nm.MultiHeadAttention.from_torch(mha)(x.numpy(), kv.numpy(), kv.numpy(), mask=pad)
    assert_close(got, ref, "float64")


def test_wrong_post_softmax_masking_breaks_row_sums_while_minus_inf_keeps_them():
    s = RNG.standard_normal((5, 5))
    mask = nmk.make_causal_mask(5)
    right = na.attn_softmax(s, mask)
    wrong = na.wrong_zero_after_softmax(s, mask)
    np.testing.assert_allclose(right.sum(-1), 1.0, atol=1e-15)
    assert np.all(wrong.sum(-1)[:-1] < 1 - 1e-3)  # every row but the last lost weight to the future
    # The wrong rows are the right rows scaled by the allowed share of the full-softmax mass.
    full = np.exp(s - s.max(-1, keepdims=True))
    share = (full * mask).sum(-1, keepdims=True) / full.sum(-1, keepdims=True)
    np.testing.assert_allclose(wrong, right * share, atol=1e-15)


# ---------------------------------------------------------------- fully masked rows: no NaN anywhere
def test_fully_masked_rows_give_zero_output_and_finite_gradients():
    q, k, v = (RNG.standard_normal((2, 3, 4)) for _ in range(3))
    mask = np.ones((2, 3, 3), dtype=bool)
    mask[0, 1] = False  # query 1 of batch 0 sees nothing

    def loss_j(q, k, v):
        out, w = ja.scaled_dot_product_attention(q, k, v, jnp.asarray(mask))
        return jnp.sum(out ** 2) + jnp.sum(w ** 2)

    grads = jax.grad(loss_j, argnums=(0, 1, 2))(*(jnp.asarray(a) for a in (q, k, v)))
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert np.all(np.asarray(grads[0])[0, 1] == 0)  # the empty row's query gets no gradient

    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out, w = ta.scaled_dot_product_attention(tq, tk, tv, torch.from_numpy(mask))
    (out.pow(2).sum() + w.pow(2).sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in (tq, tk, tv))
    out_n, w_n = na.scaled_dot_product_attention(q, k, v, mask)
    assert np.all(out_n[0, 1] == 0) and np.all(w_n[0, 1] == 0) and not np.isnan(out_n).any()


# ---------------------------------------------------------------- multi-head structure and torch formats
def test_split_and_merge_heads_are_inverse_and_slice_contiguously():
    x = RNG.standard_normal((2, 5, 12))
    heads = nm.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(heads[:, 1], x[:, :, 4:8])  # head 1 owns channels 4..7
    np.testing.assert_array_equal(nm.merge_heads(heads), x)


def test_state_dict_round_trip_through_torch_multihead_attention():
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    ref, ref_w = mha(x, x, x, average_attn_weights=False)
    for backend, conv in ((nm, lambda t: t.numpy()), (jm, lambda t: jnp.asarray(t.numpy()))):
        layer = backend.MultiHeadAttention.from_torch(mha)
        out, w = layer(conv(x), average_attn_weights=False)
        assert_close(out, ref.detach(), "float64", what="from_torch output")
        assert_close(w, ref_w.detach(), "float64", what="from_torch weights")
        fresh = torch.nn.MultiheadAttention(16, 4, batch_first=True, dtype=torch.float64).eval()
        fresh.load_state_dict(layer.state_dict())  # export back into torch's packed layout
        for key, val in mha.state_dict().items():
            assert torch.equal(fresh.state_dict()[key], val), key
    params = init_mha_params(16, seed=3)
    back = mha_params_from_torch(mha_params_to_torch(params))
    assert all(np.array_equal(back[k], params[k]) for k in params)


def test_functional_multihead_equals_the_exercise_decomposition():
    x = RNG.standard_normal((1, 3, 8))
    params = init_mha_params(8, seed=5)
    q, k, v = nm.get_multihead_qkv(x, params, 2)
    assert q.shape == (1, 2, 3, 4)
    heads, w = nm.calculate_multihead_attention(q, k, v, nmk.make_causal_mask(3))
    assert w.shape == (1, 2, 3, 3)
    out = nm.linear(nm.merge_heads(heads), params["w_o"], params["b_o"])
    ref, _ = tm.self_attention(torch.from_numpy(x), {k_: torch.from_numpy(v_) for k_, v_ in params.items()}, 2,
                               causal=True)
    assert_close(out, ref, "float64")


def test_the_self_contained_class_does_not_call_the_standalone_functions(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("MultiHeadAttention must not call the standalone functions")

    for name in ("get_multihead_qkv", "calculate_multihead_attention", "split_heads", "merge_heads", "linear"):
        monkeypatch.setattr(nm, name, boom)
    monkeypatch.setattr(na, "scaled_dot_product_attention", boom)
    nm.MultiHeadAttention(8, 2)(RNG.standard_normal((1, 3, 8)))


# ---------------------------------------------------------------- positional encodings vs libraries
def test_rope_cos_sin_match_llama_rotary_embedding_in_float32():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=256)
    rot = LlamaRotaryEmbedding(cfg)
    x = torch.zeros(1, 200, 16)
    cos_ref, sin_ref = rot(x, torch.arange(200)[None])
    cos, sin = np_.rope_cos_sin(np.arange(200), 16)
    # LlamaRotaryEmbedding builds its angles in float32 (pos * inv_freq rounds at ~1e-5 for pos~200).
    np.testing.assert_allclose(cos, cos_ref[0].double().numpy(), atol=5e-5)
    np.testing.assert_allclose(sin, sin_ref[0].double().numpy(), atol=5e-5)


def test_rope_makes_scores_depend_only_on_relative_position():
    q, k = RNG.standard_normal(8), RNG.standard_normal(8)
    def score(i, j):
        qi = np_.apply_rope(np.tile(q, (20, 1)))[i]
        kj = np_.apply_rope(np.tile(k, (20, 1)))[j]
        return qi @ kj
    assert score(7, 3) == pytest.approx(score(14, 10), abs=1e-12)
    assert score(0, 0) == pytest.approx(q @ k, abs=1e-12)


# ---------------------------------------------------------------- JAX specifics
def test_jax_float64_is_really_float64_and_jit_matches_eager():
    q, k, v = (jnp.asarray(RNG.standard_normal((2, 4, 8))) for _ in range(3))
    assert q.dtype == jnp.float64
    mask = jnp.asarray(RNG.random((2, 4, 4)) < 0.7)
    out, w = ja.scaled_dot_product_attention(q, k, v, mask)
    assert out.dtype == jnp.float64 and w.dtype == jnp.float64
    with jax.disable_jit():
        out_eager, w_eager = ja.scaled_dot_product_attention(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(out), np.asarray(out_eager), rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(w), np.asarray(w_eager), rtol=0, atol=1e-14)
    f32 = ja.scaled_dot_product_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))[0]
    assert f32.dtype == jnp.float32
