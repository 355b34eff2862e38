"""A Llama-style decoder in plain NumPy, forward and hand-written backward through the whole model.

    x = embed[idx]                                            (B, T, C), no position embedding
    n_layers times, llama_block.llama_layer (pre-norm, two residual branches):
        h = rms_norm(x, attn_norm)
        q, k, v = h W_q^T, h W_k^T, h W_v^T                   H query heads, H_kv key/value heads
        q, k = rope(q), rope(k)                               positions 0..T-1, config.rope_layout
        x = x + merge(gqa(q, k, v, causal)) W_o^T             grouped-query attention
        x = x + swiglu_mlp(rms_norm(x, mlp_norm))             (silu(h W_gate^T) * h W_up^T) W_down^T
    logits = rms_norm(x, norm) W_head^T                       W_head = embed when tied, else lm_head

Every step is an existing piece with its own backward: norms.rms_norm_forward/backward,
gqa.grouped_query_attention(_backward), positional.apply_rope(_backward), swiglu.swiglu_mlp_forward/
backward, multihead.linear/split_heads/merge_heads, layers.embedding, losses.cross_entropy. One
layer is wired once, in llama_block.llama_layer (its activations a NamedTuple, read by name by
llama_block.llama_layer_backward and by triptych/pretrained/trace.py); this file stacks the
layers, and llama_loss_and_grads walks the stack in reverse. The weights are
common.llama_config's flat dict (the same keys run in jax_impl.llama and torch_ref.llama, and
torch_ref.llama converts them to and from Hugging Face's LlamaForCausalLM state_dict).

Decoding runs the same llama_layer with another `attend`: each layer's rotated keys and values
are kept in a KV cache (kvcache.cached_attention), new
token t is rotated by its absolute position t_past + t, so step-by-step logits equal the full
forward's (the tests check it).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from triptych.common.llama_config import LAYER_KEYS, LlamaConfig, check_llama_params
from triptych.common.token_checks import check_count, check_kv_caches, check_token_ids
from numpy_impl import llama_block
from numpy_impl.kvcache import cached_attention
from numpy_impl.layers import embedding_backward, embedding_forward
from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward
from numpy_impl.multihead import linear, linear_backward
from numpy_impl.norms import rms_norm_backward, rms_norm_forward

__all__ = ["llama_forward", "llama_hidden_states", "llama_loss", "llama_loss_and_grads", "llama_forward_cached",
           "llama_decode_incrementally", "llama_generate"]


class LlamaCache(NamedTuple):
    """The whole model's activations, kept by _forward for the backward."""
    embed_cache: tuple  # layers.embedding_forward's cache (idx, table shape)
    layers: list  # n_layers llama_block.LlamaLayerCache, in order
    final_norm: np.ndarray  # (B, T, C) rms_norm(last layer's out, norm.weight)
    final_norm_cache: tuple  # norms.rms_norm_forward's cache


def _checked_idx(idx, config: LlamaConfig) -> np.ndarray:
    check_token_ids("idx", idx, config.vocab_size)
    return np.asarray(idx)


def layer_params(params: dict, i: int) -> dict:
    """Layer i's weights under llama_block's LAYER_KEYS (the arrays themselves, no copies)."""
    return {k: params[f"layers.{i}.{k}"] for k in LAYER_KEYS}


def _head(params: dict, config: LlamaConfig) -> np.ndarray:
    return params["embed.weight"] if config.tie_embeddings else params["lm_head.weight"]


def _layers(params: dict, idx, config: LlamaConfig):
    """Shapes: idx (B, T) -> the embedding's cache, n_layers LlamaLayerCache (x in, out (B, T, C))"""
    x, emb = embedding_forward(idx, params["embed.weight"])  # (B, T, C)
    positions = np.arange(idx.shape[1])
    layers = []
    for i in range(config.n_layers):  # llama_block.causal_attend: query t sees keys 0..t
        x, cache = llama_block.llama_layer(x, layer_params(params, i), config, positions)
        layers.append(cache)
    return emb, layers


def _forward(params: dict, idx, config: LlamaConfig):
    """Shapes: idx (B, T) -> logits (B, T, V), LlamaCache"""
    emb, layers = _layers(params, idx, config)
    xf, nf = rms_norm_forward(layers[-1].out, params["norm.weight"], config.norm_eps)
    return linear(xf, _head(params, config)), LlamaCache(emb, layers, xf, nf)  # (B, T, V)


def llama_forward(params: dict, idx, config: LlamaConfig) -> np.ndarray:
    """Next-token logits at every position.

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    check_llama_params(params, config)
    return _forward(params, _checked_idx(idx, config), config)[0]


def llama_hidden_states(params: dict, idx, config: LlamaConfig) -> list[np.ndarray]:
    """The residual stream: the embeddings, then the output of every layer (before the final norm),
    so a comparison names the layer where two models part. Hugging Face's output_hidden_states lists
    the same except its last entry, which it gives after the final norm.

    Shapes: idx (B, T) ints -> n_layers + 1 arrays (B, T, C)
    """
    check_llama_params(params, config)
    _, layers = _layers(params, _checked_idx(idx, config), config)
    return [layers[0].x] + [layer.out for layer in layers]


def llama_loss(params: dict, idx, targets, config: LlamaConfig) -> float:
    """Mean cross-entropy of the next-token predictions (targets == -100 are ignored).

    Shapes: idx (B, T), targets (B, T) ints -> float
    """
    return float(cross_entropy_forward(llama_forward(params, idx, config), np.asarray(targets))[0])


def llama_loss_and_grads(params: dict, idx, targets, config: LlamaConfig) -> tuple[float, dict]:
    """The loss and its gradient for every parameter, by hand: forward with caches, then backward.

    Shapes: idx (B, T), targets (B, T) ints -> (float, grads with the keys and shapes of params)
    """
    check_llama_params(params, config)
    logits, cache = _forward(params, _checked_idx(idx, config), config)
    loss, ce = cross_entropy_forward(logits, np.asarray(targets))
    grads: dict[str, np.ndarray] = {}
    dlogits = cross_entropy_backward(1.0, ce)  # loss = cross_entropy(logits, targets)
    dxf, dhead, _ = linear_backward(dlogits, cache.final_norm, _head(params, config))  # logits = final_norm W_head^T
    dx, grads["norm.weight"] = rms_norm_backward(dxf, cache.final_norm_cache)  # final_norm = rms_norm(x)
    for i in reversed(range(config.n_layers)):  # x = llama_layer(x)
        dx, g = llama_block.llama_layer_backward(dx, cache.layers[i], config)
        grads.update({f"layers.{i}.{k}": t for k, t in g.items()})
    grads["embed.weight"] = embedding_backward(dx, cache.embed_cache)  # x = embed[idx]
    if config.tie_embeddings:
        grads["embed.weight"] += dhead  # the tied matrix is used twice: lookup and head
    else:
        grads["lm_head.weight"] = dhead
    return float(loss), {k: grads[k] for k in params}


# ----------------------------------------------------------------------------------------------
# decoding with a KV cache (inference only: no backward)


def _cached_attend(kv):
    """llama_block's attend against one layer's KV cache (None: empty): kvcache.cached_attention
    appends k, v, and new query t sees the t_past cached keys and the new ones up to itself."""
    def attend(q, k, v):
        a, new_kv = cached_attention(q, k, v, kv)
        return a, None, new_kv
    return attend


def llama_forward_cached(params: dict, idx, config: LlamaConfig, caches=None):
    """Run only the NEW tokens idx against each layer's KV cache (None: an empty one, the prompt).
    New token t sits at absolute position t_past + t: RoPE rotates it there and it sees keys <= it.

    Shapes: idx (B, T_new) ints, caches: list of n_layers {"k": (B, H_kv, T_past, D), "v": ...}
            -> logits (B, T_new, V), the extended caches
    """
    check_llama_params(params, config)
    idx = _checked_idx(idx, config)
    t_past = check_kv_caches(caches, config.n_layers)
    caches = [None] * config.n_layers if caches is None else caches
    positions = t_past + np.arange(idx.shape[1])
    x, _ = embedding_forward(idx, params["embed.weight"])
    new_caches = []
    for i in range(config.n_layers):
        x, cache = llama_block.llama_layer(x, layer_params(params, i), config, positions, _cached_attend(caches[i]))
        new_caches.append(cache.attn.kv)
    xf = rms_norm_forward(x, params["norm.weight"], config.norm_eps)[0]
    return linear(xf, _head(params, config)), new_caches


def llama_decode_incrementally(params: dict, idx, config: LlamaConfig, prefill: int = 1) -> np.ndarray:
    """The first `prefill` tokens in one call, then one token per call, as a generator runs. The
    logits, joined, must equal llama_forward(params, idx, config).

    Shapes: idx (B, T) ints -> logits (B, T, V)
    """
    idx = _checked_idx(idx, config)
    T = idx.shape[1]
    check_count("prefill", prefill, 1, T)
    logits, caches = llama_forward_cached(params, idx[:, :prefill], config)
    outs = [logits]
    for t in range(prefill, T):  # one new token (one new cache row per layer) at a time
        logits, caches = llama_forward_cached(params, idx[:, t:t + 1], config, caches)
        outs.append(logits)
    return np.concatenate(outs, axis=1)


def llama_generate(params: dict, idx, config: LlamaConfig, max_new_tokens: int) -> np.ndarray:
    """Greedy decoding: the prompt in one call, then the most likely next token, one at a time.

    Shapes: idx (B, T) ints -> (B, T + max_new_tokens) ints
    """
    idx = _checked_idx(idx, config)
    check_count("max_new_tokens", max_new_tokens, 0)
    out = [idx]
    if max_new_tokens == 0:
        return idx.copy()
    logits, caches = llama_forward_cached(params, idx, config)
    for step in range(max_new_tokens):
        nxt = np.argmax(logits[:, -1], axis=-1)[:, None].astype(idx.dtype)  # (B, 1)
        out.append(nxt)
        if step + 1 < max_new_tokens:
            logits, caches = llama_forward_cached(params, nxt, config, caches)
    return np.concatenate(out, axis=1)
