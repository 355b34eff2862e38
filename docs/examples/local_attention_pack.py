"""An exercise pack for a small course of our own design: attention that looks only nearby.

    triptych exercise list --pack docs/examples/local_attention_pack.py
    triptych exercise new local-attention --pack docs/examples/local_attention_pack.py --out mine.py
    triptych check mine.py --pack docs/examples/local_attention_pack.py

A pack is a plain Python file (or an installed module behind the entry point "triptych.exercises")
that defines GROUP, TITLE, ORDER and EXERCISES, with the same Exercise, Case and Variant the built-in
groups use (triptych/crosscheck/spec.py). References are built from the three backends' own pieces,
so every case is answered by NumPy, JAX and torch and the three must agree before a student is graded;
the named mistakes are wrong answers computed here, so a failing output is matched to its cause.

Three exercises:
    alibi_slopes(n_heads)                         ALiBi's per-head slopes (Press et al. 2022, section 3)
    sliding_window_attention(q, k, v, window)     causal attention over the last `window` keys (Mistral)
    alibi_attention(q, k, v)                      causal attention with ALiBi's distance penalty
"""
from __future__ import annotations

import math

import numpy as np

from triptych.crosscheck.spec import Case, Exercise, Variant

GROUP = "local-attention"
TITLE = "Local attention (an example pack): sliding windows and ALiBi"
ORDER = 200


# ---------------------------------------------------------------- inputs

def _qkv(B, H, T, D, window=None):
    def make(rng, dtype):
        inputs = {name: rng.standard_normal((B, H, T, D)).astype(dtype) for name in ("q", "k", "v")}
        if window is not None:
            inputs["window"] = window  # a JSON scalar travels to the student's code as an int
        return inputs
    return make


# ---------------------------------------------------------------- the right answers, per backend

def _sliding(m, i):
    T = i["q"].shape[-2]
    mask = m["masks"].make_sliding_window_mask(T, i["window"])
    return m["attention"].scaled_dot_product_attention(i["q"], i["k"], i["v"], mask=mask)[0]


def _alibi(m, i):
    H, T = i["q"].shape[1], i["q"].shape[-2]
    q = i["q"]
    bias = m["masks"].alibi_bias(H, T, dtype=q.dtype)
    mask = m["masks"].make_causal_mask(T)
    return m["attention"].scaled_dot_product_attention(q, i["k"], i["v"], mask=mask, bias=bias)[0]


# ---------------------------------------------------------------- the mistakes, in plain NumPy

def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _attend(i, allowed, bias=0.0, scale=True):
    q, k, v = i["q"], i["k"], i["v"]
    s = q @ np.swapaxes(k, -1, -2)
    s = s / math.sqrt(q.shape[-1]) if scale else s
    return _softmax(np.where(allowed, s + bias, -np.inf)) @ v


def _window_mask(T, window, lo_inclusive=False, causal=True):
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    near = (j >= i - window) if lo_inclusive else (j > i - window)
    return near & (j <= i) if causal else near & (j < i + window)


def _slopes(H, naive=False):
    if naive or H & (H - 1) == 0:  # the power-of-two formula, for every H when naive
        return 2.0 ** (-8.0 * np.arange(1, H + 1) / H)
    p = 1 << (H.bit_length() - 1)
    return np.concatenate([_slopes(p), _slopes(2 * p)[0::2][: H - p]])


def _alibi_np(i, reverse=False, sign=-1.0, scaled_bias=False):
    q = i["q"]
    H, T = q.shape[1], q.shape[-2]
    slopes = _slopes(H)[::-1] if reverse else _slopes(H)
    p, j = np.arange(T)[:, None], np.arange(T)[None, :]
    bias = (-sign) * slopes[:, None, None] * (j - p)  # the right bias: -m (p - j)
    if scaled_bias:  # added to the raw scores, so it is divided by sqrt(D) with them
        bias = bias / math.sqrt(q.shape[-1])
    return _attend(i, np.tril(np.ones((T, T), bool)), bias=bias)


EXERCISES = [
    Exercise(
        "alibi_slopes", GROUP, "alibi_slopes(n_heads)", "n_heads int -> (n_heads,)",
        "vs each backend's masks.alibi_slopes: 2^(-8k/n) for a power of two n, the paper's interleaving otherwise",
        target={"name": "alibi_slopes", "args": ["n_heads"]},
        reference=lambda m, i: m["masks"].alibi_slopes(i["n_heads"]),
        cases=(Case("8 heads", lambda rng, dt: {"n_heads": 8}),
               Case("12 heads (not a power of two)", lambda rng, dt: {"n_heads": 12})),
        variants=(Variant("alibi_slopes_no_interleave", "2^(-8k/n) for every n, also where n is not a power of two",
                          "for n not a power of two the paper takes the slopes of the largest power of two p "
                          "below n, then every other slope of 2p heads",
                          lambda i: _slopes(i["n_heads"], naive=True)),),
    ),
    Exercise(
        "sliding_window_attention", GROUP, "sliding_window_attention(q, k, v, window)",
        "q, k, v (B, H, T, D), window int -> (B, H, T, D)",
        "vs each backend's SDPA under masks.make_sliding_window_mask: query i sees keys i - window < j <= i",
        target={"name": "sliding_window_attention", "args": ["q", "k", "v", "window"]},
        reference=_sliding,
        cases=(Case("B2 H2 T8 D4, window 3", _qkv(2, 2, 8, 4, window=3)),
               Case("B1 H4 T16 D8, window 5, float32", _qkv(1, 4, 16, 8, window=5), dtype="float32", seed=1)),
        variants=(Variant("window_one_too_wide", "a window of window + 1 keys (j >= i - window)",
                          "each query sees exactly `window` keys, itself included: i - window < j <= i",
                          lambda i: _attend(i, _window_mask(i["q"].shape[-2], i["window"], lo_inclusive=True))),
                  Variant("window_not_causal", "a window on both sides of the query (|i - j| < window)",
                          "the window slides over the past only: future keys stay masked",
                          lambda i: _attend(i, _window_mask(i["q"].shape[-2], i["window"], causal=False))),
                  Variant("window_no_scale", "the sliding window WITHOUT the 1/sqrt(D) scale",
                          "scores are divided by sqrt(D) before the softmax, window or not",
                          lambda i: _attend(i, _window_mask(i["q"].shape[-2], i["window"]), scale=False))),
    ),
    Exercise(
        "alibi_attention", GROUP, "alibi_attention(q, k, v)", "q, k, v (B, H, T, D) -> (B, H, T, D)",
        "vs each backend's SDPA with masks.alibi_bias added after scaling and a causal mask",
        target={"name": "alibi_attention", "args": ["q", "k", "v"]},
        reference=_alibi,
        cases=(Case("B2 H4 T8 D4", _qkv(2, 4, 8, 4)),
               Case("B1 H8 T12 D8, float32", _qkv(1, 8, 12, 8), dtype="float32", seed=1)),
        variants=(Variant("alibi_slopes_reversed", "ALiBi with the slopes in reverse head order",
                          "head 0 takes the steepest slope 2^(-8/n); the last head the gentlest",
                          lambda i: _alibi_np(i, reverse=True)),
                  Variant("alibi_sign_flipped", "ALiBi that REWARDS distance (+m (p - j))",
                          "the bias is a penalty: -m (p - j) lowers the scores of far keys",
                          lambda i: _alibi_np(i, sign=1.0)),
                  Variant("alibi_bias_scaled", "the ALiBi bias added before the 1/sqrt(D) scale",
                          "the bias is added to the already scaled scores, as SDPA adds attn_mask",
                          lambda i: _alibi_np(i, scaled_bias=True))),
    ),
]
