"""The Llama-style decoder in JAX: numpy_impl/llama.py's forward (read it for the maths), written with
jax_impl's own pieces, one layer wired once in jax_impl/llama_block.llama_layer (the full forward
and KV-cache decoding differ only in its `attend`), differentiated by jax.value_and_grad and
compiled whole by jax.jit (the config is a static argument: each configuration compiles once per
input shape).

    x = embed[idx]
    n_layers times:  x = x + W_o gqa(rope(W_q h), rope(W_k h), W_v h),  h = rms_norm(x)
                     x = x + swiglu_mlp(rms_norm(x))
    logits = rms_norm(x) W_head^T                         W_head = embed when tied, else lm_head

Decoding with the KV cache compiles one step per (new tokens, cache length) shape, like
jax_impl/kvcache.py: the cache grows by concatenation. The positions are NumPy constants derived
from those shapes, so RoPE's tables are folded into the compiled step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.llama_config import LAYER_KEYS, LlamaConfig, check_llama_params
from triptych.common.token_checks import check_count, check_kv_caches, check_token_ids
from jax_impl import llama_block
from jax_impl.kvcache import cached_attention
from jax_impl.losses import cross_entropy
from jax_impl.norms import rms_norm

__all__ = ["llama_forward", "llama_hidden_states", "llama_loss", "llama_loss_and_grads", "llama_forward_cached",
           "llama_decode_incrementally", "llama_generate"]


def layer_params(params: dict, i: int) -> dict:
    """Layer i's weights under llama_block's LAYER_KEYS."""
    return {k: params[f"layers.{i}.{k}"] for k in LAYER_KEYS}


def _head(params, config: LlamaConfig):
    return params["embed.weight"] if config.tie_embeddings else params["lm_head.weight"]


def _hidden(params, idx, config: LlamaConfig):
    positions = np.arange(idx.shape[1])  # a constant: RoPE's tables fold into the compiled program
    x = params["embed.weight"][idx]  # (B, T, C)
    states = [x]
    for i in range(config.n_layers):  # layers, not positions: unrolled once per depth
        x, _ = llama_block.llama_layer(x, layer_params(params, i), config, positions)
        states.append(x)
    return states


def _logits(params, idx, config: LlamaConfig):
    x = _hidden(params, idx, config)[-1]
    return rms_norm(x, params["norm.weight"], config.norm_eps) @ _head(params, config).T


def _loss(params, idx, targets, config: LlamaConfig):
    return cross_entropy(_logits(params, idx, config), targets)


_jit_logits = jax.jit(_logits, static_argnums=2)
_jit_hidden = jax.jit(_hidden, static_argnums=2)
_jit_loss = jax.jit(_loss, static_argnums=3)
_jit_loss_and_grads = jax.jit(jax.value_and_grad(_loss), static_argnums=3)


def _cached_attend(kv):
    """llama_block's attend against one layer's KV cache (None: empty), kvcache.cached_attention."""
    def attend(q, k, v):
        a, new_kv = cached_attention(q, k, v, kv)
        return a, None, new_kv
    return attend


def _step(params, idx, caches, config: LlamaConfig):
    t_past = 0 if caches[0] is None else caches[0]["k"].shape[2]
    positions = t_past + np.arange(idx.shape[1])  # static: shapes are known at trace time
    x = params["embed.weight"][idx]
    new_caches = []
    for i in range(config.n_layers):
        x, acts = llama_block.llama_layer(x, layer_params(params, i), config, positions, _cached_attend(caches[i]))
        new_caches.append(acts.attn.kv)
    return rms_norm(x, params["norm.weight"], config.norm_eps) @ _head(params, config).T, new_caches


_jit_step = jax.jit(_step, static_argnums=3)


def _checked(params, idx, config: LlamaConfig):
    check_llama_params(params, config)
    # Indexing out of range clamps silently in JAX, so the ids are checked before the jitted call.
    check_token_ids("idx", idx, config.vocab_size)
    return jnp.asarray(idx)


def llama_forward(params: dict, idx, config: LlamaConfig):
    """Shapes: idx (B, T) ints -> logits (B, T, vocab_size)"""
    return _jit_logits(params, _checked(params, idx, config), config)


def llama_hidden_states(params: dict, idx, config: LlamaConfig):
    """The embeddings, then every layer's output (before the final norm), as numpy_impl.llama's.

    Shapes: idx (B, T) ints -> n_layers + 1 arrays (B, T, C)
    """
    return _jit_hidden(params, _checked(params, idx, config), config)


def llama_loss(params: dict, idx, targets, config: LlamaConfig):
    """Mean cross-entropy over positions whose target is not -100. Shapes: idx, targets (B, T) -> scalar"""
    return _jit_loss(params, _checked(params, idx, config), jnp.asarray(targets), config)


def llama_loss_and_grads(params: dict, idx, targets, config: LlamaConfig):
    """The loss and jax.grad of it for every parameter (jax.value_and_grad, jitted).

    Shapes: idx (B, T), targets (B, T) -> (scalar, grads with the keys and shapes of params)
    """
    return _jit_loss_and_grads(params, _checked(params, idx, config), jnp.asarray(targets), config)


def llama_forward_cached(params: dict, idx, config: LlamaConfig, caches=None):
    """Only the new tokens, against each layer's KV cache (None: empty), at positions t_past + t.

    Shapes: idx (B, T_new) ints, caches: n_layers {"k": (B, H_kv, T_past, D), "v": ...}
            -> logits (B, T_new, V), the extended caches
    """
    idx = _checked(params, idx, config)
    check_kv_caches(caches, config.n_layers)
    caches = [None] * config.n_layers if caches is None else list(caches)
    return _jit_step(params, idx, caches, config)


def llama_decode_incrementally(params: dict, idx, config: LlamaConfig, prefill: int = 1):
    """`prefill` tokens in one call, then one per call (a Python loop by nature: each step needs the
    previous step's cache). Shapes: idx (B, T) ints -> logits (B, T, V)"""
    idx = _checked(params, idx, config)
    T = idx.shape[1]
    check_count("prefill", prefill, 1, T)
    logits, caches = llama_forward_cached(params, idx[:, :prefill], config)
    outs = [logits]
    for t in range(prefill, T):
        logits, caches = llama_forward_cached(params, idx[:, t:t + 1], config, caches)
        outs.append(logits)
    return jnp.concatenate(outs, axis=1)


def llama_generate(params: dict, idx, config: LlamaConfig, max_new_tokens: int):
    """Greedy decoding with the KV cache. Shapes: idx (B, T) ints -> (B, T + max_new_tokens) ints"""
    idx = _checked(params, idx, config)
    check_count("max_new_tokens", max_new_tokens, 0)
    if max_new_tokens == 0:
        return idx
    out = [idx]
    logits, caches = llama_forward_cached(params, idx, config)
    for step in range(max_new_tokens):
        nxt = jnp.argmax(logits[:, -1], axis=-1)[:, None].astype(idx.dtype)
        out.append(nxt)
        if step + 1 < max_new_tokens:
            logits, caches = llama_forward_cached(params, nxt, config, caches)
    return jnp.concatenate(out, axis=1)
