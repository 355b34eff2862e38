"""Llama decoding in JAX with a FIXED-SIZE KV cache: one compiled step serves every position.

Why a fixed size. jax.jit compiles for the shapes it sees. jax_impl/llama.py's llama_forward_cached
grows the cache by concatenation (as NumPy and Hugging Face's DynamicCache do), so the cache is
(B, H_kv, t, D) at step t: a new shape every step, a new trace and XLA compile every step (tens of
ms to seconds each, far more than the step itself). Here the cache is allocated once at T_max:

    cache["k"], cache["v"]: (n_layers, B, H_kv, T_max, D)        zeros, then filled left to right

and a call with T_new tokens at position t_past (a traced int32, so it changes nothing in the shapes)
    1. embeds, and per layer (lax.scan over the stacked layer weights: the layer is traced and compiled
       once, not n_layers times) runs llama_block.llama_layer, which projects q, k, v and rotates
       q, k at t_past + 0 .. T_new - 1, with an attend that does 2. and 3.:
    2. writes k, v into slots t_past .. t_past + T_new - 1 with lax.dynamic_update_slice; the cache
       buffers are donated, so XLA updates them in place rather than copying the whole cache;
    3. attends from query i over ALL T_max slots, masked to the valid ones, slots s <= t_past + i
       (later slots hold zeros or a padded prompt's leftovers and are never attended);
    4. returns the logits at one position only (the last real token): the head matrix is the largest
       in a small model (SmolLM2: 49152 x 576, a fifth of the weights) and no other row is read.

What it costs: every step attends over T_max slots, not t_past + 1, so choose T_max close to the
longest sequence you will decode (prompt + new tokens); the masked slots are work that is thrown away
(for SmolLM2 at T_max = 544 that is about 3% of a step's bytes). The memory is held from the start.

Prefill compiles once per padded prompt length: prompts are padded to a bucket (16, 32, 64, ...,
capped at T_max), so prompts of 100 and 120 tokens share one compile. Padded positions sit after the
real ones: causally no real query sees them, and their cache slots are rewritten before any later
query may attend them. decode_step is the same function at T_new = 1: compiled once.

    stacked = stack_params(params, config)              once per model
    cache = init_cache(config, t_max)                   once per sequence (or reuse: it is overwritten)
    logits, cache = decode_prefill(stacked, ids, cache, config)             ids (B, T) -> (B, V)
    logits, cache = decode_step(stacked, token, cache, t_past, config)      token (B, 1) -> (B, V)
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from triptych.common.checks import check_positive_int
from triptych.common.llama_config import LAYER_KEYS, LlamaConfig, check_decode_inputs, check_llama_params
from jax_impl.llama_block import llama_layer
from jax_impl.norms import rms_norm

__all__ = ["stack_params", "init_cache", "decode_forward", "decode_prefill", "decode_step", "prefill_bucket",
           "trace_counts"]
# JAX alone compiles: the prompt's padded length and the trace counter (for the no-retrace test)
# have no meaning in NumPy or in HF's eager StaticCache.
__backend_only__ = ["prefill_bucket", "trace_counts"]

MIN_BUCKET = 16

# How often _forward has been traced, per new-token count: a Python side effect runs only while JAX
# traces, so the tests can prove that decoding step after step does not recompile.
_TRACES: dict[int, int] = {}


def trace_counts() -> dict[int, int]:
    """{T_new: times traced} since the process started (T_new = 1 is decode_step)."""
    return dict(_TRACES)


def stack_params(params: dict, config: LlamaConfig) -> dict:
    """Our flat weight dict -> {"embed", "norm", "head", "layers": {key: (n_layers, ...)}} on the device.

    Shapes: layers["attn.w_q"] (n_layers, H*D, C), ...; head (V, C) (the embedding when tied)
    """
    check_llama_params(params, config)
    head = params["embed.weight"] if config.tie_embeddings else params["lm_head.weight"]
    layers = {k: jnp.stack([jnp.asarray(params[f"layers.{i}.{k}"]) for i in range(config.n_layers)])
              for k in LAYER_KEYS}
    embed = jnp.asarray(params["embed.weight"])
    return {"embed": embed, "norm": jnp.asarray(params["norm.weight"]),
            "head": embed if config.tie_embeddings else jnp.asarray(head), "layers": layers}


def init_cache(config: LlamaConfig, t_max: int, batch: int = 1, dtype="float32") -> dict:
    """Shapes: -> {"k": (n_layers, B, H_kv, T_max, D) zeros, "v": the same}"""
    check_positive_int("t_max", t_max)
    check_positive_int("batch", batch)
    shape = (config.n_layers, batch, config.n_kv_heads, int(t_max), config.d_head)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def _masked_gqa(q, k, v, valid):
    """Grouped-query attention without copying K, V per query head: the H query heads are viewed
    as (H_kv, G) and each group reads its one KV head.

    Shapes: q (B, H, T, D), k, v (B, H_kv, S, D), valid (T, S) bool -> (B, H, T, D)
    """
    B, H, T, D = q.shape
    H_kv = k.shape[1]
    qg = q.reshape(B, H_kv, H // H_kv, T, D)  # query head h = g * G + j, as repeat_kv orders them
    scores = jnp.einsum("bkgtd,bksd->bkgts", qg, k) / np.sqrt(D).astype(q.dtype)
    scores = jnp.where(valid, scores, -jnp.inf)  # slot 0 is always valid: no row is all -inf
    weights = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bkgts,bksd->bkgtd", weights, v).reshape(B, H, T, D)


def _fixed_cache_attend(k_cache, v_cache, t_past, positions):
    """llama_block's attend for the fixed-size cache: writes the new k, v into slots t_past ..
    t_past + T - 1 and attends over all T_max slots, masked to s <= t_past + i.

    Shapes: k_cache, v_cache (B, H_kv, T_max, D); attend's kv: the written (k_cache, v_cache)
    """
    def attend(q, k, v):
        at = (jnp.int32(0), jnp.int32(0), t_past, jnp.int32(0))  # slots t_past .. t_past + T - 1
        k_all = lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), at)
        v_all = lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), at)
        valid = jnp.arange(k_all.shape[2])[None, :] <= positions[:, None]  # (T, T_max): slot s <= t_past + i
        return _masked_gqa(q, k_all, v_all, valid), None, (k_all, v_all)
    return attend


@partial(jax.jit, static_argnums=5, donate_argnums=2)
def _forward(stacked, idx, cache, t_past, last, config: LlamaConfig):
    _TRACES[idx.shape[1]] = _TRACES.get(idx.shape[1], 0) + 1
    positions = t_past + jnp.arange(idx.shape[1])  # absolute positions of the new tokens
    x = stacked["embed"][idx]  # (B, T, C)

    def body(x, layer):  # traced once for all layers: the weights and this layer's cache are scanned
        p, k_cache, v_cache = layer
        x, acts = llama_layer(x, p, config, positions, _fixed_cache_attend(k_cache, v_cache, t_past, positions))
        return x, acts.attn.kv

    x, (k, v) = lax.scan(body, x, (stacked["layers"], cache["k"], cache["v"]))
    x_last = lax.dynamic_index_in_dim(x, last, axis=1, keepdims=False)  # (B, C): the last real token
    logits = rms_norm(x_last, stacked["norm"], config.norm_eps) @ stacked["head"].T
    return logits, {"k": k, "v": v}


def decode_forward(stacked: dict, idx, cache: dict, t_past: int, config: LlamaConfig, last: int | None = None):
    """T_new tokens at positions t_past .. t_past + T_new - 1 against the cache (donated: use the
    returned one). Compiles once per (B, T_new, T_max).

    Shapes: idx (B, T_new) ints, cache {"k", "v"}: (n_layers, B, H_kv, T_max, D)
            -> logits (B, V) at new position `last` (default T_new - 1), the updated cache
    """
    idx = check_decode_inputs(idx, cache["k"].shape, t_past, config).astype(np.int32)
    last = idx.shape[1] - 1 if last is None else last
    return _forward(stacked, idx, cache, jnp.int32(t_past), jnp.int32(last), config)


def prefill_bucket(t: int, t_max: int) -> int:
    """The padded length a prompt of t tokens is compiled at: the next power of two >= 16, <= T_max."""
    return min(t_max, max(MIN_BUCKET, 1 << (int(t) - 1).bit_length()))


def decode_prefill(stacked: dict, idx, cache: dict, config: LlamaConfig):
    """The prompt at positions 0 .. T - 1, padded to prefill_bucket(T) (padding never attended).

    Shapes: idx (B, T) ints -> logits (B, V) at position T - 1, the cache filled up to T
    """
    idx = check_decode_inputs(idx, cache["k"].shape, 0, config)
    t_max = cache["k"].shape[3]
    T = idx.shape[1]
    padded = np.zeros((idx.shape[0], prefill_bucket(T, t_max)), dtype=np.int32)
    padded[:, :T] = idx
    return decode_forward(stacked, padded, cache, 0, config, last=T - 1)


def decode_step(stacked: dict, token, cache: dict, t_past: int, config: LlamaConfig):
    """One new token per sequence at position t_past. Shapes: token (B, 1) ints -> logits (B, V), cache"""
    return decode_forward(stacked, token, cache, t_past, config)
