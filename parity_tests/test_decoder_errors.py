"""Bad input to gqa, kvcache and the new masks raises an InputError naming the argument, with the same
wording in all three backends (as parity_tests/test_core_errors.py does for the core ops)."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl  # noqa: F401
from triptych.common.checks import InputError
from jax_impl import gqa as jg, kvcache as jk, masks as jm
from numpy_impl import gqa as ng, kvcache as nk, masks as nm
from torch_ref import gqa as tg, kvcache as tk, masks as tm

BACKENDS = {
    "numpy": (dict(gqa=ng, kvcache=nk, masks=nm), np.asarray),
    "jax": (dict(gqa=jg, kvcache=jk, masks=jm), jnp.asarray),
    "torch": (dict(gqa=tg, kvcache=tk, masks=tm), lambda a: torch.from_numpy(np.asarray(a))),
}
R = np.random.default_rng(0)
Q = R.standard_normal((2, 6, 5, 4))
K, V = R.standard_normal((2, 2, 7, 4)), R.standard_normal((2, 2, 7, 4))
NAN_BIAS = np.zeros((6, 5, 7))
NAN_BIAS[0, 0, 0] = np.nan
CACHE = {"k": R.standard_normal((2, 2, 3, 4)), "v": R.standard_normal((2, 2, 3, 4))}
X = R.standard_normal((2, 5, 8))
LAYER = {"w_q": np.zeros((8, 8)), "w_k": np.zeros((4, 8)), "w_v": np.zeros((4, 8)), "w_o": np.zeros((8, 8))}


def _conv_cache(c, cache):
    return {k: c(v) for k, v in cache.items()}


def _layers(c, **override):
    return [{k: c(override.get(k, v)) for k, v in LAYER.items()}]


BAD_CALLS = {
    "KV heads not dividing query heads": (
        lambda m, c: m["gqa"].grouped_query_attention(c(Q), c(K[:, :1].repeat(4, 1)), c(V[:, :1].repeat(4, 1))),
        "k: expected a number of KV heads dividing q's 6 heads, got 4"),
    "k and v head counts differ": (
        lambda m, c: m["gqa"].grouped_query_attention(c(Q), c(K), c(V[:, :1])),
        "v: expected head count 2 to match k's head axis (H_kv), got 1"),
    "batch sizes differ": (
        lambda m, c: m["gqa"].grouped_query_attention(c(Q), c(K[:1]), c(V[:1])),
        "k: expected batch size 2 to match q's batch axis (B), got 1"),
    "3-D query to gqa": (
        lambda m, c: m["gqa"].grouped_query_attention(c(Q[0]), c(K), c(V)),
        "q: expected a 4-D array (B, H, T_q, D), got shape (6, 5, 4)"),
    "n_rep zero": (lambda m, c: m["gqa"].repeat_kv(c(K), 0), "n_rep: expected a positive integer, got 0"),
    "integer bias": (
        lambda m, c: m["gqa"].grouped_query_attention(c(Q), c(K), c(V), bias=c(np.zeros((5, 7), np.int64))),
        "bias: expected a floating-point array, got dtype int64"),
    "bias of the wrong shape": (
        lambda m, c: m["gqa"].grouped_query_attention(c(Q), c(K), c(V), bias=c(np.zeros((5, 6)))),
        "bias: expected a shape broadcastable to (2, 6, 5, 7) (an additive score bias), got (5, 6)"),
    "NaN in bias": (
        lambda m, c: m["gqa"].grouped_query_attention(c(Q), c(K), c(V), bias=c(NAN_BIAS)),
        "bias: expected finite values, got NaN or inf"),
    "window zero": (lambda m, c: m["masks"].make_sliding_window_mask(4, 0), "window: expected a positive integer, got 0"),
    "fractional offset": (lambda m, c: m["masks"].make_sliding_window_mask(4, 2, offset=1.5),
                          "offset: expected an integer, got 1.5"),
    "ALiBi with no heads": (lambda m, c: m["masks"].alibi_slopes(0), "n_heads: expected a positive integer, got 0"),
    "ALiBi bias with no queries": (lambda m, c: m["masks"].alibi_bias(4, 0), "t_q: expected a positive integer, got 0"),
    "new keys with other heads than the cache": (
        lambda m, c: m["kvcache"].kv_cache_update(_conv_cache(c, CACHE), c(K[:, :1, :1].repeat(3, 1)),
                                                  c(V[:, :1, :1].repeat(3, 1))),
        "k_new: expected shape (2, 2, *, 4), got (2, 3, 1, 4)"),
    "negative cache length": (lambda m, c: m["kvcache"].cache_mask(1, -1),
                              "t_past: expected a non-negative integer, got -1"),
    "query and new keys of different lengths": (
        lambda m, c: m["kvcache"].cached_attention(c(Q), c(K[:, :, :1]), c(V[:, :, :1]), _conv_cache(c, CACHE)),
        "q: expected sequence length 1 to match k_new's sequence axis (T_new), got 5"),
    "KV heads not dividing the stack's heads": (
        lambda m, c: m["kvcache"].attention_stack(c(X), _layers(c), 4, 3),
        "n_kv_heads: expected a divisor of n_heads=4, got 3"),
    "layer weights of the wrong shape": (
        lambda m, c: m["kvcache"].attention_stack(c(X), _layers(c, w_k=np.zeros((8, 8))), 4, 2),
        "layers[0]['w_k']: expected shape (4, 8), got (8, 8)"),
    "prefill beyond the sequence": (
        lambda m, c: m["kvcache"].decode_incrementally(c(X), _layers(c), 4, 2, prefill=9),
        "prefill: expected an integer in [0, T=5], got 9"),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("what", list(BAD_CALLS))
def test_bad_input_message_is_the_same_in_every_backend(backend, what):
    call, message = BAD_CALLS[what]
    mods, conv = BACKENDS[backend]
    with pytest.raises(ValueError) as info:
        call(mods, conv)
    assert isinstance(info.value, InputError)
    assert str(info.value) == message
