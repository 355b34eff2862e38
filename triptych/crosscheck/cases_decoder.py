"""Parity rows for grouped-query attention, the KV cache, sliding windows and ALiBi, at the registry's
sizes (B=4, H=8 query heads, T=128, d_head=64, T_K=96 for cross rows).

torch_ref runs torch SDPA with enable_gqa=True (HF's repeat_kv for repeat_kv), torch.cat for the
cache, HF's sliding-window mask function, and Bloom's slope algorithm in float64;
crosscheck.cases.all_cases() adds these rows.
"""
from __future__ import annotations

import numpy as np

from triptych.crosscheck.cases import B, D_HEAD, D_MODEL, H, T, T_K, Case, _padding_causal_mask

H_KV = 2  # 4 query heads per KV head, as Llama 2 70B's 64 / 8
WINDOW = 32
ALIBI_HEADS = 12  # not a power of two: the interleaved extra slopes are exercised
T_DECODE, PREFILL = 12, 8  # a decoding row compiles once per step in JAX: keep the steps few


def _gqa(rng, dtype, h_kv=H_KV, t_k=T):
    return {"q": rng.standard_normal((B, H, T, D_HEAD)).astype(dtype),
            "k": rng.standard_normal((B, h_kv, t_k, D_HEAD)).astype(dtype),
            "v": rng.standard_normal((B, h_kv, t_k, D_HEAD)).astype(dtype)}


def _decode_step(rng, dtype):
    """One new token after T - 1 cached ones."""
    return {"q": rng.standard_normal((B, H, 1, D_HEAD)).astype(dtype),
            "k": rng.standard_normal((B, H_KV, 1, D_HEAD)).astype(dtype),
            "v": rng.standard_normal((B, H_KV, 1, D_HEAD)).astype(dtype),
            "cache": {"k": rng.standard_normal((B, H_KV, T - 1, D_HEAD)).astype(dtype),
                      "v": rng.standard_normal((B, H_KV, T - 1, D_HEAD)).astype(dtype)}}


def _stack(rng, dtype, t=T):
    """Two attention layers with 1/sqrt(fan_in) weights, so activations stay O(1) through the residuals."""
    def w(rows, cols):
        return (rng.uniform(-1, 1, (rows, cols)) / np.sqrt(cols)).astype(dtype)

    layers = {f"l{n}": {"w_q": w(H * D_HEAD, D_MODEL), "w_k": w(H_KV * D_HEAD, D_MODEL),
                        "w_v": w(H_KV * D_HEAD, D_MODEL), "w_o": w(D_MODEL, H * D_HEAD)} for n in range(2)}
    return {"x": rng.standard_normal((B, t, D_MODEL)).astype(dtype), "layers": layers}


def _layer_list(i):
    return [i["layers"][name] for name in sorted(i["layers"])]  # nested dicts convert; lists would not


CASES: list[Case] = [
    Case("repeat_kv (H_kv=2 -> 8)", lambda m, i: (m["gqa"].repeat_kv(i["k"], H // H_KV),), _gqa),
    Case("grouped_query_attention (H_kv=2) causal",
         lambda m, i: m["gqa"].grouped_query_attention(i["q"], i["k"], i["v"], m["masks"].make_causal_mask(T)), _gqa),
    Case("grouped_query_attention MQA cross+padding",
         lambda m, i: m["gqa"].grouped_query_attention(i["q"], i["k"], i["v"], i["mask"]),
         lambda rng, dt: {**_gqa(rng, dt, 1, T_K), "mask": _padding_causal_mask(T, T_K)}),
    Case("grouped_query_attention + ALiBi, sliding window",
         lambda m, i: m["gqa"].grouped_query_attention(
             i["q"], i["k"], i["v"], m["masks"].make_sliding_window_mask(T, WINDOW),
             bias=m["masks"].alibi_bias(H, T, dtype=i["dtype"])),
         lambda rng, dt: {**_gqa(rng, dt), "dtype": dt}),
    Case("make_sliding_window_mask (T_q != T_k, offset)",
         lambda m, i: (m["masks"].make_sliding_window_mask(T, WINDOW, T_K, offset=T_K - T),), lambda rng, dt: {}),
    Case("alibi_slopes (12 heads)", lambda m, i: (m["masks"].alibi_slopes(ALIBI_HEADS, dtype=i["dtype"]),),
         lambda rng, dt: {"dtype": dt}),
    Case("alibi_bias (12 heads, offset)",
         lambda m, i: (m["masks"].alibi_bias(ALIBI_HEADS, T, T_K, offset=T_K - T, dtype=i["dtype"]),),
         lambda rng, dt: {"dtype": dt}),
    Case("sdpa + ALiBi bias (causal)",
         lambda m, i: m["attention"].scaled_dot_product_attention(
             i["q"], i["k"], i["v"], m["masks"].make_causal_mask(T), bias=m["masks"].alibi_bias(H, T, dtype=i["dtype"])),
         lambda rng, dt: {**_gqa(rng, dt, H), "dtype": dt}),
    Case("cached_attention (one token after 127, window)",
         lambda m, i: (lambda out, c: (out, c["k"], c["v"]))(
             *m["kvcache"].cached_attention(i["q"], i["k"], i["v"], i["cache"], window=WINDOW)),
         _decode_step),
    Case("attention_stack (2 layers, GQA, full causal)",
         lambda m, i: (m["kvcache"].attention_stack(i["x"], _layer_list(i), H, H_KV)[0],), _stack),
    Case("decode_incrementally (prefill 8, then 4 single tokens)",
         lambda m, i: (m["kvcache"].decode_incrementally(i["x"], _layer_list(i), H, H_KV, PREFILL),),
         lambda rng, dt: _stack(rng, dt, T_DECODE)),
]
