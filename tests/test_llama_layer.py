"""One Llama layer per backend (numpy_impl/jax_impl/torch_ref llama_block.llama_layer): its activations
are named, the full forward, the KV-cache decoder and the tracer all run that one function, and the
shared input checks (triptych/common/token_checks.py) refuse in the same words in the three backends.
References: the backends' own llama_forward (a different caller of the layer) and torch's."""
from __future__ import annotations

import numpy as np
import pytest

import jax_impl  # noqa: F401  (float64 on)
from jax_impl import llama as jl
from jax_impl import llama_decode as jd
from numpy_impl import llama as nl
from numpy_impl import llama_block as nb
from numpy_impl import llama_decode as nd
from torch_ref import llama as tl
from triptych.common.checks import InputError
from triptych.common.llama_config import LlamaConfig, init_llama_params
from triptych.common.tolerances import assert_close
from triptych.pretrained import trace

CONFIG = LlamaConfig(vocab_size=23, block_size=16, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=24)
IDX = np.array([[1, 5, 7, 2, 9], [3, 3, 0, 22, 4]])


@pytest.fixture(scope="module")
def params():
    return init_llama_params(CONFIG, seed=3, dtype=np.float64, std=0.3)


def test_numpy_layer_cache_is_named(params):
    p = nl.layer_params(params, 0)
    x = np.random.default_rng(0).standard_normal((2, 5, 16))
    out, cache = nb.llama_layer(x, p, CONFIG, np.arange(5))
    assert isinstance(cache, nb.LlamaLayerCache) and isinstance(cache.attn, nb.AttentionCache)
    assert cache.out is out and cache.x is x
    assert cache.attn.q_rope.shape == (2, 4, 5, 4) and cache.attn.k_rope.shape == (2, 2, 5, 4)
    assert cache.attn.weights.shape == (2, 4, 5, 5) and cache.attn.kv is None
    assert cache.gate.shape == cache.up.shape == (2, 5, 24)
    np.testing.assert_array_equal(cache.resid_attn, x + cache.attn.o_proj)  # the names mean what they say
    np.testing.assert_array_equal(cache.out, cache.resid_attn + cache.mlp)
    np.testing.assert_array_equal(cache.gate, cache.mlp_norm @ p["mlp.w_gate"].T)


def test_model_cache_is_named(params):
    logits, cache = nl._forward(params, IDX, CONFIG)
    assert isinstance(cache, nl.LlamaCache) and len(cache.layers) == CONFIG.n_layers
    np.testing.assert_array_equal(logits, cache.final_norm @ params["embed.weight"].T)
    np.testing.assert_array_equal(cache.layers[1].x, cache.layers[0].out)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_trace_reads_the_forwards_layer(params, backend):
    steps = trace.trace_llama(params, IDX, CONFIG, backend)
    mod = {"numpy": nl, "jax": jl}[backend]
    hidden = mod.llama_hidden_states(params, IDX, CONFIG)
    outs = [s.value for s in steps if s.name == "resid_mlp"]
    for got, want in zip(outs, hidden[1:]):
        assert_close(got, np.asarray(want), "float64")
    ref = tl.llama_forward(params, IDX, CONFIG).detach().numpy()  # torch's own pieces: an independent referee
    assert_close(steps[-1].value, ref, "float64", what=f"{backend} traced logits vs torch")
    if backend == "numpy":  # the same function on the same arrays: bit for bit
        np.testing.assert_array_equal(steps[-1].value, nl.llama_forward(params, IDX, CONFIG))


def test_one_layer_function_serves_forward_decoder_and_trace(params, monkeypatch):
    assert trace.layer_module("numpy") is nl.llama_block is nd.llama_block  # one module, read at call time
    real, calls = nb.llama_layer, []

    def shifted(x, p, config, positions, attend=nb.causal_attend):  # the layer, plus one
        calls.append(x.shape[1])
        out, cache = real(x, p, config, positions, attend)
        return out + 1.0, cache._replace(out=out + 1.0)

    before = nl.llama_forward(params, IDX, CONFIG)
    monkeypatch.setattr(nb, "llama_layer", shifted)
    after = nl.llama_forward(params, IDX, CONFIG)
    traced = trace.trace_llama(params, IDX, CONFIG, "numpy")[-1].value
    cached, _ = nl.llama_forward_cached(params, IDX, CONFIG)
    fixed, _ = nd.decode_prefill(nd.stack_params(params, CONFIG), IDX, nd.init_cache(CONFIG, 8, 2, "float64"), CONFIG)
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(traced, after)
    assert_close(cached, after, "float64")
    assert_close(fixed, after[:, -1], "float64")
    assert calls == [5] * (4 * CONFIG.n_layers)  # forward, trace, both decoders: every layer each


def test_fixed_cache_decoders_match_the_forward(params):
    for mod, ref in ((nd, nl), (jd, jl)):
        stacked = mod.stack_params(params, CONFIG)
        cache = mod.init_cache(CONFIG, 8, batch=2, dtype="float64")
        logits, cache = mod.decode_prefill(stacked, IDX[:, :3], cache, CONFIG)
        full = np.asarray(ref.llama_forward(params, IDX, CONFIG))
        assert_close(np.asarray(logits), full[:, 2], "float64")
        logits, cache = mod.decode_step(stacked, IDX[:, 3:4], cache, 3, CONFIG)
        assert_close(np.asarray(logits), full[:, 3], "float64")


BACKENDS = [nl, jl, tl]


@pytest.mark.parametrize("mod", BACKENDS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("caches, words", [
    ("kv", "caches: expected None or a list of n_layers=2 {'k', 'v'} caches, got str of length 2"),
    ([], "caches: expected None or a list of n_layers=2 {'k', 'v'} caches, got list of length 0"),
    ([{"k": np.zeros((1, 2, 3, 4))}, None], "caches[0]: expected a {'k', 'v'} dict of (B, H_kv, T_past, D) arrays"),
    ([{"k": np.zeros((1, 2, 3, 4)), "v": np.zeros((1, 2, 3, 4))},
      {"k": np.zeros((1, 2, 2, 4)), "v": np.zeros((1, 2, 2, 4))}],
     "caches: expected every layer's cache to hold the same number of positions, got [2, 3]"),
])
def test_cache_refusals_read_the_same(params, mod, caches, words):
    with pytest.raises(InputError) as e:
        mod.llama_forward_cached(params, np.array([[1]]), CONFIG, caches=caches)
    assert words in str(e.value)


@pytest.mark.parametrize("mod", BACKENDS, ids=lambda m: m.__name__)
def test_count_and_id_refusals_read_the_same(params, mod):
    with pytest.raises(InputError, match=r"^prefill: expected an integer in \[1, 2\], got True$"):
        mod.llama_decode_incrementally(params, np.array([[1, 2]]), CONFIG, prefill=True)
    with pytest.raises(InputError, match=r"^idx: expected at least one position, got shape \(1, 0\)$"):
        mod.llama_generate(params, np.zeros((1, 0), dtype=np.int64), CONFIG, 1)
    with pytest.raises(InputError, match=r"^idx: expected token ids in \[0, 23\), got values in \[-1, 2\]$"):
        mod.llama_forward(params, np.array([[-1, 2]]), CONFIG)
