"""The KV cache: prefill, then one token at a time, equals the full forward.

References, independent of kvcache.py's own mask logic:
- the full forward written with torch SDPA is_causal=True (enable_gqa) and no cache at all;
- Hugging Face itself: a stack of tiny LlamaAttention layers (rotation off: cos = 1, sin = 0)
  decoding with one DynamicCache, with HF's own sliding-window mask function for windows.
torch_ref/kvcache.py is plain torch.cat + SDPA(enable_gqa) under the offset mask; NumPy and JAX
are compared with it and with the two references, float64 and float32.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import DynamicCache, LlamaConfig
from transformers.masking_utils import sliding_window_causal_mask_function
from transformers.models.llama.modeling_llama import LlamaAttention

import jax_impl  # noqa: F401  (float64 on)
from triptych.common.tolerances import assert_close
from jax_impl import kvcache as jk
from numpy_impl import kvcache as nk
from torch_ref import kvcache as tk

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _layers(rng, n_layers, d_model, n_heads, n_kv_heads, d_head, dtype=np.float64):
    s = 1.0 / np.sqrt(d_model)
    return [{"w_q": rng.uniform(-s, s, (n_heads * d_head, d_model)).astype(dtype),
             "w_k": rng.uniform(-s, s, (n_kv_heads * d_head, d_model)).astype(dtype),
             "w_v": rng.uniform(-s, s, (n_kv_heads * d_head, d_model)).astype(dtype),
             "w_o": rng.uniform(-s, s, (d_model, n_heads * d_head)).astype(dtype)} for _ in range(n_layers)]


def _to(layers, conv):
    return [{k: conv(v) for k, v in p.items()} for p in layers]


def _torch_full_forward(x, layers, n_heads, n_kv_heads):
    """No cache: every layer attends over the whole sequence with SDPA's own causal flag."""
    x = torch.from_numpy(x)
    for p in _to(layers, torch.from_numpy):
        b, t, _ = x.shape
        heads = lambda y, h: y.view(b, t, h, -1).transpose(1, 2)  # noqa: E731
        q, k, v = heads(x @ p["w_q"].T, n_heads), heads(x @ p["w_k"].T, n_kv_heads), heads(x @ p["w_v"].T, n_kv_heads)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + a.transpose(1, 2).reshape(b, t, -1) @ p["w_o"].T
    return x.numpy()


def _hf_decode(x, layers, n_heads, n_kv_heads, prefill, window=None):
    """HF LlamaAttention layers sharing one DynamicCache: prefill, then one token per call."""
    b, t, c = x.shape
    d_head = layers[0]["w_q"].shape[0] // n_heads
    config = LlamaConfig(hidden_size=c, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, head_dim=d_head,
                         attention_bias=False, attn_implementation="sdpa")
    mods = []
    for i, p in enumerate(layers):
        m = LlamaAttention(config, layer_idx=i).double().eval()
        for name, key in (("q_proj", "w_q"), ("k_proj", "w_k"), ("v_proj", "w_v"), ("o_proj", "w_o")):
            getattr(m, name).weight.data = torch.from_numpy(p[key].copy())
        mods.append(m)
    cache, outs, xt = DynamicCache(), [], torch.from_numpy(x)
    chunks = ([(0, prefill)] if prefill else []) + [(s, s + 1) for s in range(prefill, t)]
    with torch.no_grad():
        for s, e in chunks:
            h = xt[:, s:e]
            rot = (torch.ones(b, e - s, d_head, dtype=h.dtype), torch.zeros(b, e - s, d_head, dtype=h.dtype))
            mask = None  # HF: causal for a multi-token prefill, everything cached for one token
            if window is not None:
                mask = sliding_window_causal_mask_function(window)(
                    0, 0, torch.arange(s, e)[:, None], torch.arange(e)[None, :]).expand(1, 1, e - s, e)
            for m in mods:
                h = h + m(h, position_embeddings=rot, attention_mask=mask, past_key_values=cache)[0]
            outs.append(h)
    return torch.cat(outs, 1).numpy(), cache


def _three(x, layers, n_heads, n_kv_heads, prefill, window=None, alibi=False):
    return {
        "numpy": nk.decode_incrementally(x, layers, n_heads, n_kv_heads, prefill, window, alibi),
        "jax": np.asarray(jk.decode_incrementally(jnp.asarray(x), _to(layers, jnp.asarray), n_heads, n_kv_heads,
                                                  prefill, window, alibi)),
        "torch": tk.decode_incrementally(torch.from_numpy(x), _to(layers, torch.from_numpy), n_heads, n_kv_heads,
                                         prefill, window, alibi).numpy(),
    }


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])  # MQA, GQA, MHA
@pytest.mark.parametrize("prefill", [0, 1, 5])
def test_decoding_equals_full_forward_and_hf(n_kv_heads, prefill):
    rng = np.random.default_rng(n_kv_heads * 10 + prefill)
    x = rng.standard_normal((2, 8, 16))
    layers = _layers(rng, 3, 16, 4, n_kv_heads, 4)
    full = _torch_full_forward(x, layers, 4, n_kv_heads)
    hf, hf_cache = _hf_decode(x, layers, 4, n_kv_heads, prefill)
    assert_close(hf, full, "float64", what="HF decoding vs full forward")
    for name, got in _three(x, layers, 4, n_kv_heads, prefill).items():
        assert_close(got, full, "float64", what=f"{name} decoding vs full forward")
        assert_close(got, hf, "float64", what=f"{name} vs HF DynamicCache")
    # The caches: (B, H_kv, T, D) per layer, the same keys HF stored.
    _, caches = nk.attention_stack(x, layers, 4, n_kv_heads)
    for i, c in enumerate(caches):
        assert c["k"].shape == (2, n_kv_heads, 8, 4)
        assert_close(c["k"], hf_cache.layers[i].keys, "float64", what=f"layer {i} keys")
        assert_close(c["v"], hf_cache.layers[i].values, "float64", what=f"layer {i} values")


@pytest.mark.parametrize("window", [1, 3, 6])
def test_sliding_window_decoding_equals_hf(window):
    rng = np.random.default_rng(window)
    x = rng.standard_normal((1, 9, 12))
    layers = _layers(rng, 2, 12, 6, 2, 2)
    hf, _ = _hf_decode(x, layers, 6, 2, 4, window=window)
    full_t, _ = tk.attention_stack(torch.from_numpy(x), _to(layers, torch.from_numpy), 6, 2, window=window)
    assert_close(full_t, hf, "float64", what="torch_ref full forward vs HF")
    for name, got in _three(x, layers, 6, 2, 4, window=window).items():
        assert_close(got, hf, "float64", what=f"{name} window={window}")


def test_alibi_decoding_equals_alibi_full_forward():
    """The offset reaches the ALiBi bias too: decoding with alibi=True equals the full forward with it,
    and differs from decoding without it (the bias is not a no-op)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 7, 12))
    layers = _layers(rng, 2, 12, 6, 3, 2)
    full, _ = tk.attention_stack(torch.from_numpy(x), _to(layers, torch.from_numpy), 6, 3, alibi=True)
    outs = _three(x, layers, 6, 3, 2, window=4, alibi=True)
    full_w, _ = tk.attention_stack(torch.from_numpy(x), _to(layers, torch.from_numpy), 6, 3, window=4, alibi=True)
    for name, got in outs.items():
        assert_close(got, full_w, "float64", what=name)
    assert_close(nk.decode_incrementally(x, layers, 6, 3, 3, alibi=True), full, "float64")
    assert np.abs(nk.decode_incrementally(x, layers, 6, 3, 3) - full.numpy()).max() > 1e-3


def test_float32_decoding_within_the_table():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 8, 16)).astype(np.float32)
    layers = _layers(rng, 3, 16, 4, 2, 4, np.float32)
    ref = _torch_full_forward(x, layers, 4, 2)
    for name, got in _three(x, layers, 4, 2, 3, alibi=False).items():
        assert got.dtype == np.float32, name
        assert_close(got, ref, "float32", what=name)


def test_cache_update_and_mask_by_hand():
    k = np.arange(2 * 1 * 3 * 2, dtype=float).reshape(2, 1, 3, 2)
    c = nk.kv_cache_update(None, k[:, :, :2], k[:, :, :2])
    c = nk.kv_cache_update(c, k[:, :, 2:], k[:, :, 2:])
    assert np.array_equal(c["k"], k)
    # Two new queries after three cached keys: positions 3 and 4 see keys 0..3 and 0..4.
    want = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    for mod in (nk, jk, tk):
        assert np.array_equal(np.asarray(mod.cache_mask(2, 3)), want)
        assert np.array_equal(np.asarray(mod.cache_mask(2, 3, window=2)), [[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]])


@SETTINGS
@given(st.integers(1, 2), st.sampled_from([(4, 1), (4, 2), (6, 3), (6, 6), (8, 2)]), st.integers(1, 7),
       st.data(), st.one_of(st.none(), st.integers(1, 5)), st.booleans(), st.integers(0, 2**31 - 1))
def test_random_decoding_schedules(b, heads, t, data, window, alibi, seed):
    n_heads, n_kv_heads = heads
    prefill = data.draw(st.integers(0, t))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((b, t, 8))
    layers = _layers(rng, 2, 8, n_heads, n_kv_heads, 2)
    full_n, _ = nk.attention_stack(x, layers, n_heads, n_kv_heads, window=window, alibi=alibi)
    full_t, _ = tk.attention_stack(torch.from_numpy(x), _to(layers, torch.from_numpy), n_heads, n_kv_heads,
                                   window=window, alibi=alibi)
    assert_close(full_n, full_t, "float64", what="full forward")
    dec = nk.decode_incrementally(x, layers, n_heads, n_kv_heads, prefill, window, alibi)
    assert_close(dec, full_t, "float64", what="numpy decoding")
    dec_t = tk.decode_incrementally(torch.from_numpy(x), _to(layers, torch.from_numpy), n_heads, n_kv_heads,
                                    prefill, window, alibi)
    assert_close(dec_t, full_t, "float64", what="torch decoding")
