"""The Llama-style model: logits and EVERY parameter gradient of the hand-written
NumPy model against Hugging Face's LlamaForCausalLM (autograd), torch autograd of torch_ref's model
and jax.grad; tied and untied heads, MHA, GQA and MQA, both RoPE layouts (the interleaved one goes
through the converters' row permutation into HF's half layout).

float64: HF's LlamaRMSNorm and LlamaRotaryEmbedding compute in float32 even for float64 models
(torch_ref/llama.py says where), which caps HF float64 near 1e-7. The float64 referee is therefore
HF with exactly those two modules swapped for float64 ones (hf_model(exact_float64=True)) and,
independently, torch_ref's model from F.rms_norm and friends; both must agree with NumPy to 1e-10
in logits and gradients. HF untouched is compared in float32 (eager and sdpa) within the table, and
in float64 a canary checks that it really is only float32-accurate.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.llama_config import LlamaConfig, init_llama_params
from triptych.common.tolerances import assert_close, max_abs_err, tolerance
from jax_impl import llama as jl
from numpy_impl import llama as nl
from torch_ref import llama as tl

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# (tie, n_kv_heads, layout): MHA, GQA (2 groups of 2) and MQA; both heads; both layouts.
CASES = [(True, 2, "half"), (False, 4, "half"), (True, 1, "interleaved"), (False, 2, "interleaved")]


def _setup(tie, n_kv, layout, dtype=np.float64, d_model=32, seed=0):
    config = LlamaConfig(vocab_size=97, d_model=d_model, n_layers=2, n_heads=4, n_kv_heads=n_kv, d_ff=48,
                         tie_embeddings=tie, rope_layout=layout, rope_base=500.0, norm_eps=1e-5)
    # std 0.2 (not HF's 0.02) and norm gains away from 1, so logits are far from uniform and every
    # gradient, the norms' included, carries signal.
    params = init_llama_params(config, seed=seed, dtype=dtype, std=0.2, norm_jitter=0.3)
    rng = np.random.default_rng(seed + 1)
    idx = rng.integers(0, config.vocab_size, (2, 9))
    targets = rng.integers(0, config.vocab_size, (2, 9))
    targets[0, :3] = -100  # ignored positions take part in neither the loss nor its mean
    return config, params, idx, targets


def _assert_grads(grads, ref, dtype, kind, what):
    assert set(grads) == set(ref), (sorted(grads), sorted(ref))
    for k in ref:
        assert np.abs(ref[k]).max() > 0, f"{k}: the reference gradient is zero; the test would pass trivially"
        assert_close(grads[k], ref[k], dtype, kind=kind, what=f"{what} d loss / d {k}")


@pytest.mark.parametrize("tie,n_kv,layout", CASES)
def test_numpy_equals_hf_float64(tie, n_kv, layout):
    config, params, idx, targets = _setup(tie, n_kv, layout)
    loss, grads = nl.llama_loss_and_grads(params, idx, targets, config)
    hf_loss, hf_logits, hf_grads = tl.hf_loss_and_grads(params, idx, targets, config, torch.float64,
                                                        attn_implementation="sdpa", exact_float64=True)
    assert hf_logits.dtype == np.float64
    # The bar: 1e-10 for logits AND gradients (the value/float64 row, tighter than grad's).
    assert_close(nl.llama_forward(params, idx, config), hf_logits, np.float64, what="logits vs HF")
    assert_close(loss, hf_loss, np.float64, what="loss vs HF")
    _assert_grads(grads, hf_grads, np.float64, "value", "NumPy vs HF")
    assert set(grads) == set(params)


@pytest.mark.parametrize("tie,n_kv,layout", CASES)
def test_numpy_equals_torch_autograd_float64(tie, n_kv, layout):
    config, params, idx, targets = _setup(tie, n_kv, layout, seed=3)
    loss, grads = nl.llama_loss_and_grads(params, idx, targets, config)
    t_loss, t_grads = tl.llama_loss_and_grads(params, idx, targets, config)
    assert_close(nl.llama_forward(params, idx, config), tl.llama_forward(params, idx, config), np.float64, what="logits")
    assert_close(loss, t_loss, np.float64, what="loss")
    _assert_grads(grads, t_grads, np.float64, "value", "NumPy vs torch autograd")


def test_numpy_equals_jax_grad():
    # One case (untied, GQA, interleaved: the most paths) because each compiles for seconds; the
    # float32 test below runs JAX on the tied, half-layout case.
    config, params, idx, targets = _setup(False, 2, "interleaved", seed=5)
    loss, grads = nl.llama_loss_and_grads(params, idx, targets, config)
    j_loss, j_grads = jl.llama_loss_and_grads(params, idx, targets, config)
    assert_close(loss, j_loss, np.float64, what="loss vs JAX")
    _assert_grads(grads, {k: np.asarray(v) for k, v in j_grads.items()}, np.float64, "value", "NumPy vs jax.grad")
    assert_close(jl.llama_forward(params, idx, config), nl.llama_forward(params, idx, config), np.float64, what="logits")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("tie,n_kv,layout", [CASES[0], CASES[3]])
def test_float32_within_the_table_against_unmodified_hf(tie, n_kv, layout, attn):
    config, params, idx, targets = _setup(tie, n_kv, layout, dtype=np.float32, seed=7)
    loss, grads = nl.llama_loss_and_grads(params, idx, targets, config)
    hf_loss, hf_logits, hf_grads = tl.hf_loss_and_grads(params, idx, targets, config, attn_implementation=attn)
    assert hf_logits.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    assert_close(nl.llama_forward(params, idx, config), hf_logits, np.float32, what=f"float32 logits vs HF {attn}")
    assert_close(loss, hf_loss, np.float32, what="float32 loss")
    _assert_grads(grads, hf_grads, np.float32, "grad", f"float32 NumPy vs HF {attn}")
    if attn == "sdpa" and tie:  # JAX's float32 too, against the same HF numbers (one case: compile time)
        j_loss, j_grads = jl.llama_loss_and_grads(params, idx, targets, config)
        _assert_grads({k: np.asarray(v) for k, v in j_grads.items()}, hf_grads, np.float32, "grad", "float32 JAX vs HF")


def test_unmodified_hf_float64_is_only_float32_accurate():
    """The canary behind exact_float64: if a transformers release keeps float64 in RMSNorm and RoPE,
    this fails, and the swaps in torch_ref.hf_model can go."""
    config, params, idx, targets = _setup(True, 2, "half")
    ours = nl.llama_forward(params, idx, config)
    plain = tl.hf_model(params, config, torch.float64)(input_ids=torch.from_numpy(idx)).logits.detach().numpy()
    assert plain.dtype == np.float64
    err = max_abs_err(plain, ours)
    assert err > tolerance(np.float64).atol, f"HF float64 now matches to {err:.1e}: drop exact_float64's swaps"
    assert_close(plain, ours, np.float32, what="HF float64 (float32 internals) vs NumPy float64")


def test_interleaved_layout_is_a_row_permutation_of_the_half_one():
    """The same HF model, read as an interleaved checkpoint (rows permuted by from_hf_state_dict),
    gives the same logits in our interleaved model: Meta/GGUF and HF are one model."""
    half, params, idx, _ = _setup(False, 2, "half", seed=11)
    inter = LlamaConfig(**{**half.to_dict(), "rope_layout": "interleaved"})
    sd = tl.to_hf_state_dict(params, half)
    permuted = tl.from_hf_state_dict(sd, inter)
    assert not np.array_equal(permuted["layers.0.attn.w_q"], params["layers.0.attn.w_q"])
    np.testing.assert_array_equal(permuted["layers.0.attn.w_v"], params["layers.0.attn.w_v"])  # v is not rotated
    assert_close(nl.llama_forward(permuted, idx, inter), nl.llama_forward(params, idx, half), np.float64,
                 what="interleaved vs half logits")
