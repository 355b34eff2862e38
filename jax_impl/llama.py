"""The Llama-style decoder in JAX: numpy_impl/llama.py's forward (read it for the maths), written with
jax_impl's own pieces (rms_norm, apply_rope, grouped_query_attention, swiglu_mlp, cross_entropy,
cached_attention), differentiated by jax.value_and_grad and compiled whole by jax.jit (the config
is a static argument: each configuration compiles once per input shape).

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

from triptych.common.checks import InputError, check_ndim
from triptych.common.llama_config import LlamaConfig, check_llama_params
from jax_impl.gqa import grouped_query_attention
from jax_impl.kvcache import cached_attention
from jax_impl.losses import cross_entropy
from jax_impl.masks import make_causal_mask
from jax_impl.multihead import merge_heads, split_heads
from jax_impl.norms import rms_norm
from jax_impl.positional import apply_rope
from jax_impl.swiglu import swiglu_mlp

__all__ = ["llama_forward", "llama_hidden_states", "llama_loss", "llama_loss_and_grads", "llama_forward_cached",
           "llama_decode_incrementally", "llama_generate"]


def _layer(params: dict, i: int, part: str) -> dict:
    pre = f"layers.{i}.{part}."
    return {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}


def _head(params, config: LlamaConfig):
    return params["embed.weight"] if config.tie_embeddings else params["lm_head.weight"]


def _qkv(h, p, config: LlamaConfig, positions):
    """Shapes: h (B, T, C) -> q (B, H, T, D), k, v (B, H_kv, T, D); q, k rotated at `positions`"""
    q = split_heads(h @ p["w_q"].T, config.n_heads)
    k = split_heads(h @ p["w_k"].T, config.n_kv_heads)
    v = split_heads(h @ p["w_v"].T, config.n_kv_heads)
    rope = dict(positions=positions, base=config.rope_base, layout=config.rope_layout)
    return apply_rope(q, **rope), apply_rope(k, **rope), v


def _hidden(params, idx, config: LlamaConfig):
    T = idx.shape[1]
    positions, mask = np.arange(T), make_causal_mask(T)
    x = params["embed.weight"][idx]  # (B, T, C)
    states = [x]
    for i in range(config.n_layers):  # layers, not positions: unrolled once per depth
        pre = f"layers.{i}."
        q, k, v = _qkv(rms_norm(x, params[pre + "attn_norm.weight"], config.norm_eps), _layer(params, i, "attn"),
                       config, positions)
        a, _ = grouped_query_attention(q, k, v, mask)
        x = x + merge_heads(a) @ params[pre + "attn.w_o"].T
        x = x + swiglu_mlp(rms_norm(x, params[pre + "mlp_norm.weight"], config.norm_eps), _layer(params, i, "mlp"))
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


def _step(params, idx, caches, config: LlamaConfig):
    t_past = 0 if caches[0] is None else caches[0]["k"].shape[2]
    positions = t_past + np.arange(idx.shape[1])  # static: shapes are known at trace time
    x = params["embed.weight"][idx]
    new_caches = []
    for i in range(config.n_layers):
        pre = f"layers.{i}."
        q, k, v = _qkv(rms_norm(x, params[pre + "attn_norm.weight"], config.norm_eps), _layer(params, i, "attn"),
                       config, positions)
        a, cache = cached_attention(q, k, v, caches[i])
        x = x + merge_heads(a) @ params[pre + "attn.w_o"].T
        x = x + swiglu_mlp(rms_norm(x, params[pre + "mlp_norm.weight"], config.norm_eps), _layer(params, i, "mlp"))
        new_caches.append(cache)
    return rms_norm(x, params["norm.weight"], config.norm_eps) @ _head(params, config).T, new_caches


_jit_step = jax.jit(_step, static_argnums=3)


def _check_idx(name: str, idx):
    idx = jnp.asarray(idx)
    check_ndim(name, idx, 2, "(B, T) token ids")
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise InputError(f"{name}: expected integer token ids, got dtype {idx.dtype}")
    if idx.shape[1] == 0:
        raise InputError(f"{name}: expected at least one position, got shape {tuple(idx.shape)}")
    return idx


def _check_ids(name: str, idx, vocab_size: int):
    # Indexing out of range clamps silently in JAX, so the ids are checked before the jitted call.
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= vocab_size:
        raise InputError(f"{name}: expected token ids in [0, {vocab_size}), got values in [{lo}, {hi}]")


def _checked(params, idx, config: LlamaConfig):
    check_llama_params(params, config)
    idx = _check_idx("idx", idx)
    _check_ids("idx", idx, config.vocab_size)
    return idx


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


def _check_caches(caches, config: LlamaConfig) -> None:
    if caches is None:
        return
    if not isinstance(caches, (list, tuple)) or len(caches) != config.n_layers:
        raise InputError(f"caches: expected None or a list of n_layers={config.n_layers} {{'k', 'v'}} caches, "
                         f"got {type(caches).__name__} of length {len(caches) if hasattr(caches, '__len__') else '?'}")
    lengths = {int(c["k"].shape[2]) for c in caches}
    if len(lengths) != 1:
        raise InputError(f"caches: expected every layer's cache to hold the same number of positions, got {sorted(lengths)}")


def llama_forward_cached(params: dict, idx, config: LlamaConfig, caches=None):
    """Only the new tokens, against each layer's KV cache (None: empty), at positions t_past + t.

    Shapes: idx (B, T_new) ints, caches: n_layers {"k": (B, H_kv, T_past, D), "v": ...}
            -> logits (B, T_new, V), the extended caches
    """
    idx = _checked(params, idx, config)
    _check_caches(caches, config)
    caches = [None] * config.n_layers if caches is None else list(caches)
    return _jit_step(params, idx, caches, config)


def _check_count(name: str, value, low: int, high: int | None = None) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if not ok or (high is not None and value > high):
        span = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{name}: expected an integer {span}, got {value!r}")


def llama_decode_incrementally(params: dict, idx, config: LlamaConfig, prefill: int = 1):
    """`prefill` tokens in one call, then one per call (a Python loop by nature: each step needs the
    previous step's cache). Shapes: idx (B, T) ints -> logits (B, T, V)"""
    idx = _check_idx("idx", idx)
    T = idx.shape[1]
    _check_count("prefill", prefill, 1, T)
    logits, caches = llama_forward_cached(params, idx[:, :prefill], config)
    outs = [logits]
    for t in range(prefill, T):
        logits, caches = llama_forward_cached(params, idx[:, t:t + 1], config, caches)
        outs.append(logits)
    return jnp.concatenate(outs, axis=1)


def llama_generate(params: dict, idx, config: LlamaConfig, max_new_tokens: int):
    """Greedy decoding with the KV cache. Shapes: idx (B, T) ints -> (B, T + max_new_tokens) ints"""
    idx = _check_idx("idx", idx)
    _check_count("max_new_tokens", max_new_tokens, 0)
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
