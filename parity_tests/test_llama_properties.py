"""The Llama-style model: values a person can check, the hand-written backward
against central finite differences, hypothesis over configurations (head counts and groupings,
head sizes, depth, tie, layout, lengths) against torch autograd, and bad input rejected by name with
the same message in the three backends."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.llama_config import LlamaConfig, init_llama_params, llama_param_shapes
from triptych.common.tolerances import assert_close
from jax_impl import llama as jl
from numpy_impl import llama as nl
from torch_ref import llama as tl

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tiny(**kw):
    base = dict(vocab_size=11, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=12)
    return LlamaConfig(**{**base, **kw})


# ---------------------------------------------------------------- values a person can check
def test_with_silent_branches_the_model_is_norm_then_head():
    """w_o = 0 and w_down = 0: neither branch writes to the residual stream, so each position's logits
    are rms_norm(embed[token]) * g scored against the head, computed here by hand."""
    config = _tiny(tie_embeddings=False)
    p = init_llama_params(config, seed=0, dtype=np.float64, std=0.5, norm_jitter=0.3)
    for i in range(config.n_layers):
        p[f"layers.{i}.attn.w_o"][:] = 0.0
        p[f"layers.{i}.mlp.w_down"][:] = 0.0
    idx = np.array([[3, 1, 4, 1, 5]])
    x = p["embed.weight"][idx]
    by_hand = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + config.norm_eps) * p["norm.weight"] @ p["lm_head.weight"].T
    for fwd in (nl.llama_forward, jl.llama_forward):
        assert_close(fwd(p, idx, config), by_hand, np.float64, what=fwd.__module__)
    # the same token gives the same logits wherever it stands (positions 1 and 3 both hold token 1)
    np.testing.assert_array_equal(nl.llama_forward(p, idx, config)[0, 1], nl.llama_forward(p, idx, config)[0, 3])


def test_first_position_sees_only_itself():
    """Causality: changing later tokens never changes earlier logits."""
    config = _tiny()
    p = init_llama_params(config, seed=1, dtype=np.float64, std=0.5)
    a, b = np.array([[1, 2, 3, 4]]), np.array([[1, 2, 9, 0]])
    np.testing.assert_array_equal(nl.llama_forward(p, a, config)[:, :2], nl.llama_forward(p, b, config)[:, :2])
    assert not np.allclose(nl.llama_forward(p, a, config)[:, 2:], nl.llama_forward(p, b, config)[:, 2:])


def test_smollm2_sized_config_and_param_count():
    """SmolLM2-135M's configuration: 30 layers, d 576, 9 heads over 3 KV heads, tied, base 1e5.
    Its published parameter count is 134,515,008; the shapes alone (no arrays) must give it."""
    config = LlamaConfig(vocab_size=49152, block_size=8192, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3,
                         d_ff=1536, rope_base=100000.0, norm_eps=1e-5, tie_embeddings=True)
    assert config.d_head == 64
    assert sum(int(np.prod(s)) for s in llama_param_shapes(config).values()) == 134_515_008
    hf = tl.hf_config(config)
    assert (hf.num_key_value_heads, hf.head_dim, hf.rope_parameters["rope_theta"], hf.tie_word_embeddings) == (3, 64, 1e5, True)


# ---------------------------------------------------------------- finite differences
@pytest.mark.parametrize("tie,layout", [(True, "half"), (False, "interleaved")])
def test_backward_against_finite_differences(tie, layout):
    config = _tiny(tie_embeddings=tie, rope_layout=layout)
    p = init_llama_params(config, seed=2, dtype=np.float64, std=0.4, norm_jitter=0.3)
    rng = np.random.default_rng(3)
    idx, targets = rng.integers(0, 11, (2, 5)), rng.integers(0, 11, (2, 5))
    _, grads = nl.llama_loss_and_grads(p, idx, targets, config)
    h = 1e-6
    for k in p:
        for j in rng.choice(p[k].size, 2, replace=False):
            plus, minus = dict(p), dict(p)
            plus[k], minus[k] = p[k].copy(), p[k].copy()
            plus[k].flat[j] += h
            minus[k].flat[j] -= h
            fd = (nl.llama_loss(plus, idx, targets, config) - nl.llama_loss(minus, idx, targets, config)) / (2 * h)
            assert_close(grads[k].flat[j], fd, np.float64, kind="finite_difference", what=f"{k}[{j}]")


# ---------------------------------------------------------------- hypothesis over configurations
@SETTINGS
@given(n_kv=st.sampled_from([1, 2, 4]), rep=st.sampled_from([1, 2]), d_head=st.sampled_from([2, 4, 8]),
       n_layers=st.integers(1, 2), tie=st.booleans(), layout=st.sampled_from(["half", "interleaved"]),
       b=st.integers(1, 2), t=st.integers(1, 6), free_head=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_random_configs_match_torch_autograd(n_kv, rep, d_head, n_layers, tie, layout, b, t, free_head, seed):
    n_heads = n_kv * rep
    # free_head: head_dim set apart from d_model / n_heads (Gemma-style); otherwise the HF default
    d_model = 12 if free_head else n_heads * d_head
    config = LlamaConfig(vocab_size=13, d_model=d_model, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                         d_ff=10, head_dim=d_head if free_head else None, tie_embeddings=tie, rope_layout=layout)
    p = init_llama_params(config, seed=seed, dtype=np.float64, std=0.4, norm_jitter=0.3)
    rng = np.random.default_rng(seed)
    idx, targets = rng.integers(0, 13, (b, t)), rng.integers(0, 13, (b, t))
    loss, grads = nl.llama_loss_and_grads(p, idx, targets, config)
    t_loss, t_grads = tl.llama_loss_and_grads(p, idx, targets, config)
    assert_close(loss, t_loss, np.float64, what="loss")
    for k in p:
        assert_close(grads[k], t_grads[k], np.float64, what=k)
    assert_close(nl.llama_decode_incrementally(p, idx, config, prefill=1 + seed % t), nl.llama_forward(p, idx, config),
                 np.float64, what="decoding")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw,match", [
    (dict(n_kv_heads=3, n_heads=4), "n_kv_heads: expected a divisor of n_heads=4, got 3"),
    (dict(d_model=10, n_heads=4), "n_heads: expected a divisor of d_model=10"),
    (dict(head_dim=3), "head_dim: expected an even head size"),
    (dict(rope_layout="gptj"), "rope_layout: expected one of"),
    (dict(d_ff=0), "d_ff: expected a positive integer"),
    (dict(norm_eps=0.0), "norm_eps: expected a positive number"),
    (dict(tie_embeddings=1), "tie_embeddings: expected True or False"),
])
def test_config_errors(kw, match):
    with pytest.raises(InputError, match=match):
        _tiny(**kw)


BACKENDS = [nl, jl, tl]


@pytest.mark.parametrize("mod", BACKENDS, ids=lambda m: m.__name__)
def test_input_errors_read_the_same_in_three_backends(mod):
    config = _tiny()
    p = init_llama_params(config, dtype=np.float64)
    with pytest.raises(InputError, match=r"idx: expected a 2-D array \(B, T\) token ids"):
        mod.llama_forward(p, np.zeros(4, dtype=np.int64), config)
    with pytest.raises(InputError, match="idx: expected integer token ids"):
        mod.llama_forward(p, np.zeros((1, 4)), config)
    with pytest.raises(InputError, match=r"idx: expected token ids in \[0, 11\)"):
        mod.llama_forward(p, np.array([[1, 11]]), config)
    with pytest.raises(InputError, match=r"missing \['norm.weight'\]"):
        mod.llama_forward({k: v for k, v in p.items() if k != "norm.weight"}, np.array([[1]]), config)
    with pytest.raises(InputError, match=r"params\['layers.0.attn.w_k'\]: expected shape \(4, 8\)"):
        mod.llama_forward({**p, "layers.0.attn.w_k": np.zeros((8, 8))}, np.array([[1]]), config)
    with pytest.raises(InputError, match=r"prefill: expected an integer in \[1, 2\], got 3"):
        mod.llama_decode_incrementally(p, np.array([[1, 2]]), config, prefill=3)
    with pytest.raises(InputError, match="max_new_tokens: expected an integer >= 0"):
        mod.llama_generate(p, np.array([[1, 2]]), config, -1)
    with pytest.raises(InputError, match="caches: expected None or a list of n_layers=2"):
        mod.llama_forward_cached(p, np.array([[1]]), config, caches=[])
