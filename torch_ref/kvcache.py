"""The referee for the KV cache: plain torch.cat for the cache (what Hugging Face's DynamicCache.update
does inside) and torch SDPA with enable_gqa=True under the offset mask, through torch_ref.gqa.

parity_tests/test_decoder_kvcache.py checks this file in turn against Hugging Face itself: a tiny
LlamaAttention (rotation switched off: cos = 1, sin = 0) decoding with a DynamicCache.
"""
from __future__ import annotations

import numpy as np
import torch

from triptych.common.checks import InputError, check_ndim, check_positive_int, check_same, check_shape
from triptych.common.backend_checks import check_layers, check_t_past
from torch_ref.gqa import grouped_query_attention
from torch_ref.masks import alibi_bias, make_causal_mask, make_sliding_window_mask
from torch_ref.multihead import merge_heads, split_heads

__all__ = ["kv_cache_update", "cache_mask", "cached_attention", "attention_stack", "decode_incrementally"]


def kv_cache_update(cache, k_new: torch.Tensor, v_new: torch.Tensor) -> dict:
    """Shapes: cache {"k": (B, H_kv, T_past, D), "v": ...} or None, k_new (B, H_kv, T_new, D),
    v_new (B, H_kv, T_new, D_v) -> {"k": (B, H_kv, T_past + T_new, D), "v": ...}"""
    check_ndim("k_new", k_new, 4, "(B, H_kv, T_new, D)")
    check_ndim("v_new", v_new, 4, "(B, H_kv, T_new, D_v)")
    check_same("v_new", v_new.shape[2], "k_new's sequence axis (T_new)", k_new.shape[2], "sequence length")
    if cache is None:
        return {"k": k_new, "v": v_new}
    for name, new, old in (("k_new", k_new, cache["k"]), ("v_new", v_new, cache["v"])):
        check_shape(name, new, tuple(old.shape[:2]) + (None,) + tuple(old.shape[3:]))
    return {"k": torch.cat([cache["k"], k_new], dim=-2), "v": torch.cat([cache["v"], v_new], dim=-2)}


def cache_mask(t_new: int, t_past: int, window: int | None = None) -> torch.Tensor:
    """torch.tril(diagonal=t_past), or HF's sliding-window mask function at the same positions.

    Shapes: -> (T_new, T_past + T_new) bool
    """
    check_positive_int("t_new", t_new)
    check_t_past(t_past)
    if window is None:
        return make_causal_mask(t_new, t_past + t_new, offset=t_past)
    return make_sliding_window_mask(t_new, window, t_past + t_new, offset=t_past)


def cached_attention(q, k_new, v_new, cache=None, scale: float | None = None, window: int | None = None,
                     alibi: bool = False):
    """Shapes: q (B, H, T_new, D), k_new (B, H_kv, T_new, D), v_new (B, H_kv, T_new, D_v)
    -> out (B, H, T_new, D_v), the extended cache"""
    check_ndim("q", q, 4, "(B, H, T_new, D)")
    t_past = 0 if cache is None else cache["k"].shape[2]
    cache = kv_cache_update(cache, k_new, v_new)
    t_new = q.shape[2]
    check_same("q", t_new, "k_new's sequence axis (T_new)", k_new.shape[2], "sequence length")
    mask = cache_mask(t_new, t_past, window)
    bias = alibi_bias(q.shape[1], t_new, t_past + t_new, offset=t_past, dtype=q.dtype) if alibi else None
    out, _ = grouped_query_attention(q, cache["k"], cache["v"], mask, scale, bias=bias)
    return out, cache


def attention_stack(x, layers, n_heads: int, n_kv_heads: int, caches=None, window: int | None = None,
                    alibi: bool = False):
    """Shapes: x (B, T_new, C), layers: dicts w_q (H*D, C), w_k, w_v (H_kv*D, C), w_o (C, H*D)
    -> out (B, T_new, C), the layers' extended caches"""
    check_ndim("x", x, 3, "(B, T_new, C)")
    check_layers(layers, x.shape[-1], n_heads, n_kv_heads)
    caches = [None] * len(layers) if caches is None else caches
    check_same("caches", len(caches), "layers", len(layers), "length")
    new_caches = []
    for p, cache in zip(layers, caches):
        q = split_heads(torch.nn.functional.linear(x, p["w_q"]), n_heads)
        k = split_heads(torch.nn.functional.linear(x, p["w_k"]), n_kv_heads)
        v = split_heads(torch.nn.functional.linear(x, p["w_v"]), n_kv_heads)
        a, cache = cached_attention(q, k, v, cache, window=window, alibi=alibi)
        x = x + torch.nn.functional.linear(merge_heads(a), p["w_o"])
        new_caches.append(cache)
    return x, new_caches


def decode_incrementally(x, layers, n_heads: int, n_kv_heads: int, prefill: int = 1, window: int | None = None,
                         alibi: bool = False) -> torch.Tensor:
    """Shapes: x (B, T, C) -> (B, T, C): `prefill` tokens in one call, then one per call."""
    check_ndim("x", x, 3, "(B, T, C)")
    t = x.shape[1]
    if isinstance(prefill, bool) or not isinstance(prefill, (int, np.integer)) or not 0 <= prefill <= t:
        raise InputError(f"prefill: expected an integer in [0, T={t}], got {prefill!r}")
    outs, caches = [], None
    if prefill:
        out, caches = attention_stack(x[:, :prefill], layers, n_heads, n_kv_heads, caches, window, alibi)
        outs.append(out)
    for p in range(prefill, t):
        out, caches = attention_stack(x[:, p:p + 1], layers, n_heads, n_kv_heads, caches, window, alibi)
        outs.append(out)
    return torch.cat(outs, dim=1)
