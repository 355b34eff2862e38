"""The Llama-style model decoding with a KV cache, and the Hugging Face converters.

- logits from step-by-step decoding (prefill, then one token per call) equal the full forward, in
  the three backends;
- the cache itself holds what HF's DynamicCache holds (keys after RoPE, (B, H_kv, T, D));
- greedy generation equals HF's model.generate(do_sample=False) token for token;
- to_hf_state_dict / from_hf_state_dict round-trip exactly, and weights HF initialised itself run in
  our model with HF's logits.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.checks import InputError
from triptych.common.llama_config import LlamaConfig, init_llama_params
from triptych.common.tolerances import assert_close
from jax_impl import llama as jl
from numpy_impl import llama as nl
from torch_ref import llama as tl

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _setup(tie=True, n_kv=2, layout="half", dtype=np.float64, seed=0, T=7):
    config = LlamaConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=n_kv, d_ff=40,
                         tie_embeddings=tie, rope_layout=layout, rope_base=1000.0)
    params = init_llama_params(config, seed=seed, dtype=dtype, std=0.3, norm_jitter=0.2)
    idx = np.random.default_rng(seed + 1).integers(0, config.vocab_size, (2, T))
    return config, params, idx


@pytest.mark.parametrize("prefill", [1, 4, 7])
@pytest.mark.parametrize("tie,n_kv,layout", [(True, 2, "half"), (False, 1, "interleaved"), (True, 4, "interleaved")])
def test_decoding_equals_full_forward_numpy_and_torch(tie, n_kv, layout, prefill):
    config, params, idx = _setup(tie, n_kv, layout)
    full = tl.llama_forward(params, idx, config).detach().numpy()  # the referee: SDPA is_causal, no cache
    assert_close(nl.llama_decode_incrementally(params, idx, config, prefill), full, np.float64, what="NumPy decoding")
    assert_close(tl.llama_decode_incrementally(params, idx, config, prefill), full, np.float64, what="torch decoding")


def test_decoding_equals_full_forward_jax_and_generation():
    # One JAX case: every decoding step has a new shape and compiles once; generate reuses them.
    config, params, idx = _setup(False, 2, "interleaved", T=5)
    full = nl.llama_forward(params, idx, config)
    assert_close(jl.llama_decode_incrementally(params, idx, config, prefill=3), full, np.float64, what="JAX decoding")
    ours = nl.llama_generate(params, idx[:, :3], config, 3)
    np.testing.assert_array_equal(np.asarray(jl.llama_generate(params, idx[:, :3], config, 3)), ours)


def test_float32_decoding_within_the_table():
    config, params, idx = _setup(True, 2, "half", dtype=np.float32)
    full = tl.llama_forward(params, idx, config).detach().numpy()
    assert_close(nl.llama_decode_incrementally(params, idx, config, 2), full, np.float32, what="float32 decoding")


@pytest.mark.parametrize("tie,n_kv", [(True, 2), (False, 4)])
def test_greedy_generation_equals_hf_generate(tie, n_kv):
    config, params, idx = _setup(tie, n_kv, "interleaved")
    model = tl.hf_model(params, config, torch.float64, exact_float64=True)
    # eos_token_id=None: LlamaConfig's default eos id 2 would stop HF early when a random model emits it.
    ref = model.generate(torch.from_numpy(idx), max_new_tokens=6, do_sample=False, eos_token_id=None,
                         pad_token_id=0).numpy()
    np.testing.assert_array_equal(nl.llama_generate(params, idx, config, 6), ref)
    np.testing.assert_array_equal(tl.llama_generate(params, idx, config, 6).numpy(), ref)


def test_cache_holds_what_hf_dynamic_cache_holds():
    config, params, idx = _setup(True, 2, "half")
    out = tl.hf_model(params, config, torch.float64, exact_float64=True)(input_ids=torch.from_numpy(idx), use_cache=True)
    logits, caches = nl.llama_forward_cached(params, idx, config)
    assert_close(logits, out.logits.detach().numpy(), np.float64, what="prefill logits")
    for i, layer in enumerate(out.past_key_values.layers):
        assert caches[i]["k"].shape == (2, config.n_kv_heads, idx.shape[1], config.d_head)
        assert_close(caches[i]["k"], layer.keys.detach().numpy(), np.float64, what=f"layer {i} keys (after RoPE)")
        assert_close(caches[i]["v"], layer.values.detach().numpy(), np.float64, what=f"layer {i} values")


def test_generate_by_hand_with_zero_new_tokens_and_the_argmax():
    config, params, idx = _setup()
    np.testing.assert_array_equal(nl.llama_generate(params, idx, config, 0), idx)
    first = nl.llama_generate(params, idx, config, 1)[:, -1]
    np.testing.assert_array_equal(first, nl.llama_forward(params, idx, config)[:, -1].argmax(-1))


# ---------------------------------------------------------------- converters
@pytest.mark.parametrize("tie,layout", [(True, "half"), (False, "interleaved")])
def test_converters_round_trip(tie, layout):
    config, params, _ = _setup(tie, 2, layout)
    sd = tl.to_hf_state_dict(params, config)
    hf_keys = set(tl.hf_model(params, config).state_dict())
    assert set(sd) == hf_keys
    if tie:
        assert sd["lm_head.weight"] is sd["model.embed_tokens.weight"]
    back = tl.from_hf_state_dict(sd, config)
    assert set(back) == set(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k], err_msg=k)
    # JAX arrays convert too (read-only buffers are copied).
    sd_jax = tl.to_hf_state_dict({k: jnp.asarray(v) for k, v in params.items()}, config)
    for k in sd:
        torch.testing.assert_close(sd_jax[k], sd[k], rtol=0, atol=0)


@pytest.mark.parametrize("tie,layout", [(True, "half"), (False, "interleaved")])
def test_weights_initialised_by_hf_run_in_our_model(tie, layout):
    from transformers import LlamaForCausalLM

    config, _, idx = _setup(tie, 2, layout)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tl.hf_config(config)).double().eval()
    sd = {k: v for k, v in model.state_dict().items() if not (tie and k == "lm_head.weight")}  # as checkpoints omit it
    params = tl.from_hf_state_dict(sd, config)
    ref = tl.hf_model(params, config, torch.float64, exact_float64=True)(input_ids=torch.from_numpy(idx)).logits
    assert_close(nl.llama_forward(params, idx, config), ref.detach().numpy(), np.float64, what="logits")
    # and HF's unmodified float64 model on its own weights agrees at float32 accuracy (its norms downcast)
    assert_close(nl.llama_forward(params, idx, config), model(input_ids=torch.from_numpy(idx)).logits.detach().numpy(),
                 np.float32, what="logits vs HF's own model")


def test_converter_errors_name_the_key():
    config, params, _ = _setup(False, 2, "half")
    sd = tl.to_hf_state_dict(params, config)
    with pytest.raises(InputError, match="'lm_head.weight'"):
        tl.from_hf_state_dict({k: v for k, v in sd.items() if k != "lm_head.weight"}, config)
    bad = dict(sd, **{"model.layers.1.self_attn.k_proj.weight": torch.zeros(3, 32)})
    with pytest.raises(InputError, match=r"k_proj.*expected shape \(16, 32\)"):
        tl.from_hf_state_dict(bad, config)
    with pytest.raises(InputError, match="params: expected the keys"):
        tl.to_hf_state_dict({k: v for k, v in params.items() if k != "norm.weight"}, config)
