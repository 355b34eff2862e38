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


# ----------------------------------------------------------------------------------------------
# BERT: one layer (bert.bert_layer_activations) for the encoder and the tracer

from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402

from jax_impl import bert as jbert  # noqa: E402
from numpy_impl import bert as nbert  # noqa: E402
from torch_ref import bert as tbert  # noqa: E402
from triptych.pretrained import trace_bert  # noqa: E402

BERT = SimpleNamespace(num_attention_heads=4, layer_norm_eps=1e-12)


def _bert_params(rng, C=16, F=24, V=30, P=12, n_layers=2):
    def w(*shape):
        return 0.3 * rng.standard_normal(shape)
    p = {"embed.word": w(V, C), "embed.position": w(P, C), "embed.token_type": w(2, C),
         "embed.ln.weight": 1 + w(C), "embed.ln.bias": w(C)}
    for i in range(n_layers):
        pre = f"layers.{i}."
        for n in "qkvo":
            p[pre + f"attn.w_{n}"], p[pre + f"attn.b_{n}"] = w(C, C), w(C)
        p.update({pre + "attn_ln.weight": 1 + w(C), pre + "attn_ln.bias": w(C), pre + "mlp.w_fc": w(F, C),
                  pre + "mlp.b_fc": w(F), pre + "mlp.w_proj": w(C, F), pre + "mlp.b_proj": w(C),
                  pre + "mlp_ln.weight": 1 + w(C), pre + "mlp_ln.bias": w(C)})
    return p


@pytest.fixture(scope="module")
def bert_batch():
    rng = np.random.default_rng(5)
    batch = {"input_ids": np.array([[2, 7, 9, 4, 1], [3, 8, 5, 0, 0]]),
             "attention_mask": np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
             "token_type_ids": np.zeros((2, 5), dtype=np.int64)}
    return _bert_params(rng), batch


def test_bert_layer_cache_is_named(bert_batch):
    params, _ = bert_batch
    x = np.random.default_rng(1).standard_normal((2, 5, 16))
    layer = {k[len("layers.0."):]: v for k, v in params.items() if k.startswith("layers.0.")}
    out, acts = nbert.bert_layer_activations(x, layer, 4)
    assert isinstance(acts, nbert.BertLayerCache) and acts.mlp_ln is out and acts.x is x
    assert acts.q.shape == (2, 4, 5, 4) and acts.weights.shape == (2, 4, 5, 5) and acts.fc.shape == (2, 5, 24)
    np.testing.assert_array_equal(acts.attn_resid, x + acts.attn_out)
    np.testing.assert_array_equal(acts.mlp_resid, acts.attn_ln + acts.mlp_out)
    ref, tacts = tbert.bert_layer_activations(torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in layer.items()}, 4)
    assert_close(out, ref.numpy(), "float64", what="numpy layer vs torch's (F.multi_head_attention_forward)")
    assert_close(acts.weights, tacts.weights.numpy(), "float64")


@pytest.mark.parametrize("mod", [nbert, jbert], ids=lambda m: m.__name__)
def test_bert_trace_reads_the_encoders_layer(bert_batch, mod):
    params, batch = bert_batch
    backend = "numpy" if mod is nbert else "jax"
    steps = trace_bert.trace_bert(params, batch, BERT, backend)
    hidden = mod.bert_encoder(batch["input_ids"], params, 4, batch["attention_mask"], batch["token_type_ids"])
    outs = [s.value for s in steps if s.name == "mlp_ln"]
    assert len(outs) == len(hidden) - 1 == 2
    for got, want in zip(outs, hidden[1:]):
        assert_close(got, np.asarray(want), "float64")
    if mod is nbert:
        for got, want in zip(outs, hidden[1:]):
            np.testing.assert_array_equal(got, want)


def test_one_bert_layer_serves_encoder_and_trace(bert_batch, monkeypatch):
    params, batch = bert_batch
    assert trace_bert.bert_module("numpy") is nbert
    real, calls = nbert.bert_layer_activations, []
    before = nbert.bert_encoder(batch["input_ids"], params, 4, batch["attention_mask"])[-1]

    def shifted(x, params, n_heads, mask=None, eps=nbert.BERT_EPS):
        calls.append(1)
        out, acts = real(x, params, n_heads, mask, eps)
        return out + 1.0, acts._replace(mlp_ln=out + 1.0)

    monkeypatch.setattr(nbert, "bert_layer_activations", shifted)
    hidden = nbert.bert_encoder(batch["input_ids"], params, 4, batch["attention_mask"])
    traced = [s.value for s in trace_bert.trace_bert(params, batch, BERT, "numpy") if s.name == "mlp_ln"]
    np.testing.assert_array_equal(traced[-1], hidden[-1])
    assert not np.allclose(hidden[-1], before) and len(calls) == 4  # encoder and trace: both layers each


@pytest.mark.parametrize("mod", [nbert, jbert, tbert], ids=lambda m: m.__name__)
def test_bert_id_refusals_read_the_same(bert_batch, mod):
    params, batch = bert_batch
    ids = batch["input_ids"]
    conv = torch.from_numpy if mod is tbert else np.asarray
    with pytest.raises(InputError, match=r"^input_ids: expected a 2-D array \(B, T\)"):
        mod.bert_encoder(conv(ids[0]), params, 4)
    with pytest.raises(InputError, match=r"^attention_mask: expected shape \(2, 5\)"):
        mod.bert_encoder(conv(ids), params, 4, conv(batch["attention_mask"][:, :3]))
