"""A Llama-style decoder in plain NumPy, forward and hand-written backward through the whole model.

    x = embed[idx]                                            (B, T, C), no position embedding
    n_layers times (pre-norm, two residual branches):
        h = rms_norm(x, attn_norm)
        q, k, v = h W_q^T, h W_k^T, h W_v^T                   H query heads, H_kv key/value heads
        q, k = rope(q), rope(k)                               positions 0..T-1, config.rope_layout
        x = x + merge(gqa(q, k, v, causal)) W_o^T             grouped-query attention
        x = x + swiglu_mlp(rms_norm(x, mlp_norm))             (silu(h W_gate^T) * h W_up^T) W_down^T
    logits = rms_norm(x, norm) W_head^T                       W_head = embed when tied, else lm_head

Every step is an existing piece with its own backward: norms.rms_norm_forward/backward,
gqa.grouped_query_attention(_backward), positional.apply_rope(_backward), swiglu.swiglu_mlp_forward/
backward, multihead.linear/split_heads/merge_heads, layers.embedding, losses.cross_entropy. This
file only wires them; llama_loss_and_grads walks the wiring in reverse. The weights are
common.llama_config's flat dict (the same keys run in jax_impl.llama and torch_ref.llama, and
torch_ref.llama converts them to and from Hugging Face's LlamaForCausalLM state_dict).

Decoding keeps each layer's rotated keys and values in a KV cache (kvcache.cached_attention): new
token t is rotated by its absolute position t_past + t, so step-by-step logits equal the full
forward's (the tests check it).
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_ndim
from triptych.common.llama_config import LlamaConfig, check_llama_params
from numpy_impl.gqa import grouped_query_attention, grouped_query_attention_backward
from numpy_impl.kvcache import cached_attention
from numpy_impl.layers import embedding_backward, embedding_forward
from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward
from numpy_impl.masks import make_causal_mask
from numpy_impl.multihead import linear, linear_backward, merge_heads, merge_heads_backward, split_heads, split_heads_backward
from numpy_impl.norms import rms_norm_backward, rms_norm_forward
from numpy_impl.positional import apply_rope, apply_rope_backward
from numpy_impl.swiglu import swiglu_mlp_backward, swiglu_mlp_forward

__all__ = ["llama_forward", "llama_hidden_states", "llama_loss", "llama_loss_and_grads", "llama_forward_cached",
           "llama_decode_incrementally", "llama_generate"]


def _check_idx(name: str, idx) -> np.ndarray:
    idx = np.asarray(idx)
    check_ndim(name, idx, 2, "(B, T) token ids")
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"{name}: expected integer token ids, got dtype {idx.dtype}")
    if idx.shape[1] == 0:
        raise InputError(f"{name}: expected at least one position, got shape {idx.shape}")
    return idx


def _layer(params: dict, i: int, part: str) -> dict:
    pre = f"layers.{i}.{part}."
    return {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}


def _head(params: dict, config: LlamaConfig) -> np.ndarray:
    return params["embed.weight"] if config.tie_embeddings else params["lm_head.weight"]


# ----------------------------------------------------------------------------------------------
# attention


def _project_qkv(h, p: dict, config: LlamaConfig, positions):
    """Shapes: h (B, T, C) -> q (B, H, T, D), k, v (B, H_kv, T, D), q and k rotated at `positions`"""
    q = split_heads(linear(h, p["w_q"]), config.n_heads)  # (B, H, T, D)
    k = split_heads(linear(h, p["w_k"]), config.n_kv_heads)  # (B, H_kv, T, D)
    v = split_heads(linear(h, p["w_v"]), config.n_kv_heads)
    rope = dict(positions=positions, base=config.rope_base, layout=config.rope_layout)
    return apply_rope(q, **rope), apply_rope(k, **rope), v  # queries and keys only, never values


def attention_forward(h, p: dict, config: LlamaConfig, positions, mask):
    """Causal grouped-query self-attention with RoPE. p: this layer's `attn.` params, prefix removed.

    Shapes: h (B, T, C), positions (T,), mask (T, T) -> out (B, T, C), cache
    """
    q, k, v = _project_qkv(h, p, config, positions)
    a, weights = grouped_query_attention(q, k, v, mask)  # (B, H, T, D), (B, H, T, T)
    merged = merge_heads(a)  # (B, T, H*D)
    return linear(merged, p["w_o"]), (h, p, positions, q, k, v, weights, merged)


def attention_backward(dout, cache, config: LlamaConfig):
    """Shapes: dout (B, T, C) -> dh (B, T, C), grads {w_q, w_k, w_v, w_o}"""
    h, p, positions, q, k, v, weights, merged = cache
    g = {}
    dmerged, g["w_o"], _ = linear_backward(dout, merged, p["w_o"])  # out = merged W_o^T
    da = merge_heads_backward(dmerged, config.n_heads)  # merged = merge_heads(a)
    dq, dk, dv = grouped_query_attention_backward(da, q, k, v, weights)  # a = gqa(q, k, v); KV groups summed
    rope = dict(positions=positions, base=config.rope_base, layout=config.rope_layout)
    dq, dk = apply_rope_backward(dq, **rope), apply_rope_backward(dk, **rope)  # q, k = rope(q), rope(k)
    dh = np.zeros_like(h)
    for name, d in (("w_q", dq), ("w_k", dk), ("w_v", dv)):  # q, k, v = split_heads(h W^T): h feeds all three
        dh_part, g[name], _ = linear_backward(split_heads_backward(d), h, p[name])
        dh += dh_part
    return dh, g


# ----------------------------------------------------------------------------------------------
# block


def block_forward(x, params: dict, i: int, config: LlamaConfig, positions, mask):
    """Layer i: x + attn(rms_norm(x)), then + swiglu_mlp(rms_norm(x)).

    Shapes: x (B, T, C) -> out (B, T, C), cache
    """
    pre = f"layers.{i}."
    h1, n1 = rms_norm_forward(x, params[pre + "attn_norm.weight"], config.norm_eps)
    a, attn = attention_forward(h1, _layer(params, i, "attn"), config, positions, mask)
    x = x + a
    h2, n2 = rms_norm_forward(x, params[pre + "mlp_norm.weight"], config.norm_eps)
    m, mlp = swiglu_mlp_forward(h2, _layer(params, i, "mlp"))
    return x + m, (n1, attn, n2, mlp)


def block_backward(dout, cache, i: int, config: LlamaConfig, grads: dict):
    """Writes layer i's gradients into `grads`. Shapes: dout (B, T, C) -> dx (B, T, C)"""
    n1, attn, n2, mlp = cache
    pre = f"layers.{i}."
    # out = x1 + mlp(rms_norm(x1)): the residual passes dout through, the branch adds its part.
    dh2, g = swiglu_mlp_backward(dout, mlp)
    grads.update({pre + "mlp." + k: t for k, t in g.items()})
    dx1, grads[pre + "mlp_norm.weight"] = rms_norm_backward(dh2, n2)
    dx1 = dx1 + dout
    # x1 = x + attn(rms_norm(x))
    dh1, g = attention_backward(dx1, attn, config)
    grads.update({pre + "attn." + k: t for k, t in g.items()})
    dx, grads[pre + "attn_norm.weight"] = rms_norm_backward(dh1, n1)
    return dx + dx1


# ----------------------------------------------------------------------------------------------
# the model


def _forward(params: dict, idx, config: LlamaConfig):
    T = idx.shape[1]
    x, emb = embedding_forward(idx, params["embed.weight"])  # (B, T, C)
    positions, mask = np.arange(T), make_causal_mask(T)  # query t sees keys 0..t
    blocks = []
    for i in range(config.n_layers):
        x, cache = block_forward(x, params, i, config, positions, mask)
        blocks.append(cache)
    xf, nf = rms_norm_forward(x, params["norm.weight"], config.norm_eps)
    return linear(xf, _head(params, config)), (emb, blocks, xf, nf)  # (B, T, V)


def llama_forward(params: dict, idx, config: LlamaConfig) -> np.ndarray:
    """Next-token logits at every position.

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    check_llama_params(params, config)
    return _forward(params, _check_idx("idx", idx), config)[0]


def llama_hidden_states(params: dict, idx, config: LlamaConfig) -> list[np.ndarray]:
    """The residual stream: the embeddings, then the output of every layer (before the final norm),
    so a comparison names the layer where two models part. Hugging Face's output_hidden_states lists
    the same except its last entry, which it gives after the final norm.

    Shapes: idx (B, T) ints -> n_layers + 1 arrays (B, T, C)
    """
    check_llama_params(params, config)
    idx = _check_idx("idx", idx)
    x = embedding_forward(idx, params["embed.weight"])[0]
    positions, mask = np.arange(idx.shape[1]), make_causal_mask(idx.shape[1])
    states = [x]
    for i in range(config.n_layers):
        x = block_forward(x, params, i, config, positions, mask)[0]
        states.append(x)
    return states


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
    logits, (emb, blocks, xf, nf) = _forward(params, _check_idx("idx", idx), config)
    loss, ce = cross_entropy_forward(logits, np.asarray(targets))
    grads: dict[str, np.ndarray] = {}
    dlogits = cross_entropy_backward(1.0, ce)  # loss = cross_entropy(logits, targets)
    dxf, dhead, _ = linear_backward(dlogits, xf, _head(params, config))  # logits = xf W_head^T
    dx, grads["norm.weight"] = rms_norm_backward(dxf, nf)  # xf = rms_norm(x)
    for i in reversed(range(config.n_layers)):
        dx = block_backward(dx, blocks[i], i, config, grads)  # x = block_i(x)
    grads["embed.weight"] = embedding_backward(dx, emb)  # x = embed[idx]
    if config.tie_embeddings:
        grads["embed.weight"] += dhead  # the tied matrix is used twice: lookup and head
    else:
        grads["lm_head.weight"] = dhead
    return float(loss), {k: grads[k] for k in params}


# ----------------------------------------------------------------------------------------------
# decoding with a KV cache (inference only: no backward)


def _check_caches(caches, config: LlamaConfig) -> int:
    """None, or one {"k", "v"} cache per layer, all of one length; returns that length (t_past)."""
    if caches is None:
        return 0
    if not isinstance(caches, (list, tuple)) or len(caches) != config.n_layers:
        raise InputError(f"caches: expected None or a list of n_layers={config.n_layers} {{'k', 'v'}} caches, "
                         f"got {type(caches).__name__} of length {len(caches) if hasattr(caches, '__len__') else '?'}")
    lengths = {int(c["k"].shape[2]) for c in caches}
    if len(lengths) != 1:
        raise InputError(f"caches: expected every layer's cache to hold the same number of positions, got {sorted(lengths)}")
    return lengths.pop()


def llama_forward_cached(params: dict, idx, config: LlamaConfig, caches=None):
    """Run only the NEW tokens idx against each layer's KV cache (None: an empty one, the prompt).
    New token t sits at absolute position t_past + t: RoPE rotates it there and it sees keys <= it.

    Shapes: idx (B, T_new) ints, caches: list of n_layers {"k": (B, H_kv, T_past, D), "v": ...}
            -> logits (B, T_new, V), the extended caches
    """
    check_llama_params(params, config)
    idx = _check_idx("idx", idx)
    t_past = _check_caches(caches, config)
    caches = [None] * config.n_layers if caches is None else caches
    positions = t_past + np.arange(idx.shape[1])
    x, _ = embedding_forward(idx, params["embed.weight"])
    new_caches = []
    for i in range(config.n_layers):
        pre = f"layers.{i}."
        p = _layer(params, i, "attn")
        h = rms_norm_forward(x, params[pre + "attn_norm.weight"], config.norm_eps)[0]
        q, k, v = _project_qkv(h, p, config, positions)
        a, cache = cached_attention(q, k, v, caches[i])  # appends k, v; causal over t_past + T_new keys
        x = x + linear(merge_heads(a), p["w_o"])
        h = rms_norm_forward(x, params[pre + "mlp_norm.weight"], config.norm_eps)[0]
        x = x + swiglu_mlp_forward(h, _layer(params, i, "mlp"))[0]
        new_caches.append(cache)
    xf = rms_norm_forward(x, params["norm.weight"], config.norm_eps)[0]
    return linear(xf, _head(params, config)), new_caches


def _check_count(name: str, value, low: int, high: int | None = None) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if not ok or (high is not None and value > high):
        span = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{name}: expected an integer {span}, got {value!r}")


def llama_decode_incrementally(params: dict, idx, config: LlamaConfig, prefill: int = 1) -> np.ndarray:
    """The first `prefill` tokens in one call, then one token per call, as a generator runs. The
    logits, joined, must equal llama_forward(params, idx, config).

    Shapes: idx (B, T) ints -> logits (B, T, V)
    """
    idx = _check_idx("idx", idx)
    T = idx.shape[1]
    _check_count("prefill", prefill, 1, T)
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
    idx = _check_idx("idx", idx)
    _check_count("max_new_tokens", max_new_tokens, 0)
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
