"""The KV cache: generate one token at a time without recomputing the past, in plain NumPy.

A decoder's key and value for position p depend only on tokens 0..p (causal attention), so they
never change once computed. Generation therefore keeps them, per layer, in a cache of shape
(B, H_kv, T, D) (H_kv: grouped-query attention's KV heads, the reason GQA exists), and each step
    1. projects only the NEW tokens to q, k, v                          (B, H, T_new, D), (B, H_kv, T_new, D)
    2. appends k, v to the cache                                         kv_cache_update
    3. attends from the new queries to every cached key, the new ones    cached_attention
       included; new query i sits at absolute position t_past + i, so it sees keys j <= t_past + i
       (cache_mask: make_causal_mask with offset = t_past; a sliding window or ALiBi reads the
       same offset).
The first call (the prompt, "prefill") passes many tokens at once; later calls pass one. Step by
step decoding must give exactly what one full causal forward gives: the tests check it, through a
small stack of attention layers, with GQA, a sliding window and ALiBi.

The cache here is a dict {"k", "v"} that each call returns anew (no in-place growth), like Hugging
Face's DynamicCache, which concatenates too. Inference only: there is no backward.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_ndim, check_positive_int, check_same, check_shape
from triptych.common.backend_checks import check_layers, check_t_past
from numpy_impl.gqa import grouped_query_attention
from numpy_impl.masks import alibi_bias, make_causal_mask, make_sliding_window_mask
from numpy_impl.multihead import merge_heads, split_heads

__all__ = ["kv_cache_update", "cache_mask", "cached_attention", "attention_stack", "decode_incrementally"]


def kv_cache_update(cache: dict | None, k_new: np.ndarray, v_new: np.ndarray) -> dict:
    """Append the new keys and values after the cached ones (None: an empty cache).

    Shapes: cache {"k": (B, H_kv, T_past, D), "v": (B, H_kv, T_past, D_v)}, k_new (B, H_kv, T_new, D),
            v_new (B, H_kv, T_new, D_v) -> {"k": (B, H_kv, T_past + T_new, D), "v": ...}
    """
    check_ndim("k_new", k_new, 4, "(B, H_kv, T_new, D)")
    check_ndim("v_new", v_new, 4, "(B, H_kv, T_new, D_v)")
    check_same("v_new", v_new.shape[2], "k_new's sequence axis (T_new)", k_new.shape[2], "sequence length")
    if cache is None:
        return {"k": k_new, "v": v_new}
    for name, new, old in (("k_new", k_new, cache["k"]), ("v_new", v_new, cache["v"])):
        expected = old.shape[:2] + (None,) + old.shape[3:]  # any T_new; B, H_kv, D as cached
        check_shape(name, new, expected)
    return {"k": np.concatenate([cache["k"], k_new], axis=2), "v": np.concatenate([cache["v"], v_new], axis=2)}


def cache_mask(t_new: int, t_past: int, window: int | None = None) -> np.ndarray:
    """Which of the T_past + T_new cached keys each new query may see: new query i is at absolute
    position t_past + i and sees keys j <= t_past + i (and j > t_past + i - window with a window).

    Shapes: -> (T_new, T_past + T_new) bool
    """
    check_positive_int("t_new", t_new)
    check_t_past(t_past)
    if window is None:
        return make_causal_mask(t_new, t_past + t_new, offset=t_past)
    return make_sliding_window_mask(t_new, window, t_past + t_new, offset=t_past)


def cached_attention(q, k_new, v_new, cache: dict | None = None, scale: float | None = None,
                     window: int | None = None, alibi: bool = False):
    """Attention of the new queries over the cache extended by the new keys and values: grouped-query
    attention under cache_mask, plus ALiBi's bias at the same positions when alibi=True.

    Shapes: q (B, H, T_new, D), k_new (B, H_kv, T_new, D), v_new (B, H_kv, T_new, D_v), cache as in
            kv_cache_update -> out (B, H, T_new, D_v), the extended cache
    """
    check_ndim("q", q, 4, "(B, H, T_new, D)")
    t_past = 0 if cache is None else cache["k"].shape[2]
    cache = kv_cache_update(cache, k_new, v_new)
    t_new = q.shape[2]
    check_same("q", t_new, "k_new's sequence axis (T_new)", k_new.shape[2], "sequence length")
    mask = cache_mask(t_new, t_past, window)
    bias = alibi_bias(q.shape[1], t_new, t_past + t_new, offset=t_past, dtype=q.dtype) if alibi else None
    out, _ = grouped_query_attention(q, cache["k"], cache["v"], mask, scale, bias=bias)
    return out, cache


def attention_stack(x, layers: list[dict], n_heads: int, n_kv_heads: int, caches: list | None = None,
                    window: int | None = None, alibi: bool = False):
    """A stack of residual self-attention layers, x <- x + W_o merge(attention(split(W_q x), ...)),
    run on the new tokens x against each layer's cache. caches=None starts from empty caches, so
    attention_stack(x_all, layers, ...) is the full causal forward. No norms, MLPs or RoPE: the
    point is the cache, and every layer's keys depend on the layer below.

    Shapes: x (B, T_new, C), layers: list of dicts as in check_layers, caches: one per layer (or None)
            -> out (B, T_new, C), the layers' extended caches
    """
    check_ndim("x", x, 3, "(B, T_new, C)")
    check_layers(layers, x.shape[-1], n_heads, n_kv_heads)
    caches = [None] * len(layers) if caches is None else caches
    check_same("caches", len(caches), "layers", len(layers), "length")
    new_caches = []
    for p, cache in zip(layers, caches):
        q = split_heads(x @ p["w_q"].T, n_heads)  # (B, H, T_new, D)
        k = split_heads(x @ p["w_k"].T, n_kv_heads)  # (B, H_kv, T_new, D)
        v = split_heads(x @ p["w_v"].T, n_kv_heads)
        a, cache = cached_attention(q, k, v, cache, window=window, alibi=alibi)
        x = x + merge_heads(a) @ p["w_o"].T  # (B, T_new, C)
        new_caches.append(cache)
    return x, new_caches


def decode_incrementally(x, layers: list[dict], n_heads: int, n_kv_heads: int, prefill: int = 1,
                         window: int | None = None, alibi: bool = False) -> np.ndarray:
    """Run the stack as a generator would: the first `prefill` tokens in one call, then one token
    per call against the growing caches. The outputs, joined, must equal attention_stack(x, ...).

    Shapes: x (B, T, C) -> (B, T, C)
    """
    check_ndim("x", x, 3, "(B, T, C)")
    t = x.shape[1]
    if isinstance(prefill, bool) or not isinstance(prefill, (int, np.integer)) or not 0 <= prefill <= t:
        raise InputError(f"prefill: expected an integer in [0, T={t}], got {prefill!r}")
    outs, caches = [], None
    if prefill:
        out, caches = attention_stack(x[:, :prefill], layers, n_heads, n_kv_heads, caches, window, alibi)
        outs.append(out)
    for p in range(prefill, t):  # one new token (and one new cache row per layer) at a time
        out, caches = attention_stack(x[:, p:p + 1], layers, n_heads, n_kv_heads, caches, window, alibi)
        outs.append(out)
    return np.concatenate(outs, axis=1)
