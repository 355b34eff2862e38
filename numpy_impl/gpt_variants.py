"""The course's attention experiments (docs/course.md, section I), the pieces that plug into the
straight GPT of numpy_impl.gpt. Each replaces one step and brings its own backward:

    positions          where the embeddings get their order: learned (the straight GPT's wpe) |
                       sinusoidal (a fixed table) | none, and scale_embeddings (tokens * sqrt(C))
                       -> add_positions_forward / add_positions_backward
    attention          the block's attention, through layers.transformer_block_forward's `attention`
                       slot (block_attention(config) looks it up; None is the standard attention):
        projections    q, k, v from shared projections (share_qkv) or small MLPs (qkv_mlp)
        positions      RoPE on q and k | ALiBi's per-head distance penalty on the scores
        similarity     q.k / sqrt(D) | minus the squared distance | cosine with a learned temperature
        masking        before the softmax | after it (post_softmax_mask, the wrong way)
        AFT-simple     no heads and no (T, T) matrix: cumulative sums over time (Zhai et al. 2021)

GPTConfig's fields name the variant (triptych/common/gpt_config.py lists them and their weight
keys); straight_attention / straight_embeddings there say when none is asked for. jax_impl.gpt_variants
and torch_ref.gpt_variants hold the same functions, written from the definitions.
"""
from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import NamedTuple

import numpy as np

from triptych.common.gpt_config import GPTConfig, qkv_projections, qkv_sources, straight_attention
from numpy_impl.attention import (
    attn_softmax,
    attn_softmax_backward,
    compute_outputs,
    compute_outputs_backward,
    pairwise_similarities,
    pairwise_similarities_backward,
    wrong_zero_after_softmax,
    wrong_zero_after_softmax_backward,
)
from numpy_impl.layers import BlockAttention, dropout_backward, dropout_forward, mlp_backward, mlp_forward
from numpy_impl.masks import alibi_bias, make_causal_mask
from numpy_impl.multihead import linear, linear_backward, merge_heads, merge_heads_backward, split_heads, split_heads_backward
from numpy_impl.positional import apply_rope, apply_rope_backward, learned_positional_encoding_backward, sinusoidal_encoding

__all__ = ["neg_sq_distance", "neg_sq_distance_forward", "neg_sq_distance_backward",
           "cosine_similarity", "cosine_similarity_forward", "cosine_similarity_backward",
           "aft_simple", "aft_simple_forward", "aft_simple_backward",
           "project_qkv", "project_qkv_forward", "project_qkv_backward",
           "attention", "attention_forward", "attention_backward",
           "add_positions", "add_positions_forward", "add_positions_backward", "block_attention"]
# The (out, cache) forwards exist for the hand-written backward; JAX and torch differentiate
# automatically, so they only have the plain forwards.
__backend_only__ = [n for n in __all__ if n.endswith("_forward")]


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


@lru_cache(maxsize=16)
def _sinusoidal(T: int, C: int, dtype_name: str) -> np.ndarray:
    table = sinusoidal_encoding(T, C, dtype=np.dtype(dtype_name))
    table.flags.writeable = False  # shared between calls
    return table


@lru_cache(maxsize=16)
def _alibi(H: int, T: int, dtype_name: str) -> np.ndarray:
    bias = alibi_bias(H, T, dtype=np.dtype(dtype_name))  # (H, T, T)
    bias.flags.writeable = False  # shared between calls
    return bias


# ----------------------------------------------------------------------------------------------
# similarities and AFT-simple: each replaces softmax(q k^T / sqrt(D)) or a part of it


def neg_sq_distance_forward(q, k, scale: float):
    """Similarity = minus the squared distance: -|q - k|^2 * scale = (2 q.k - |q|^2 - |k|^2) * scale.
    (The |q|^2 term is constant along a softmax row and cancels; |k|^2 does not: long keys lose.)

    Shapes: q (..., T_q, D), k (..., T_k, D) -> scores (..., T_q, T_k)
    """
    q2 = np.sum(q * q, axis=-1)[..., :, None]  # (..., T_q, 1)
    k2 = np.sum(k * k, axis=-1)[..., None, :]  # (..., 1, T_k)
    return (2.0 * (q @ np.swapaxes(k, -1, -2)) - q2 - k2) * scale


def neg_sq_distance_backward(dscores, q, k, scale: float):
    """Shapes: dscores (..., T_q, T_k) -> dq (..., T_q, D), dk (..., T_k, D)"""
    ds = dscores * scale  # scores = (...) * scale
    # 2 q.k gives 2 ds k and 2 ds^T q; -|q|^2 gives -2 q * (row sums of ds); -|k|^2 likewise by column.
    dq = 2.0 * (ds @ k) - 2.0 * q * np.sum(ds, axis=-1)[..., None]
    dk = 2.0 * (np.swapaxes(ds, -1, -2) @ q) - 2.0 * k * np.sum(ds, axis=-2)[..., None]
    return dq, dk


def cosine_similarity_forward(q, k, temperature):
    """Similarity = temperature * cos(q, k): the direction of q and k only, with a learned sharpness
    (the cosine lives in [-1, 1], too flat for a softmax on its own). Norms are floored at 1e-12 as
    torch's F.normalize does.

    Shapes: q (..., T_q, D), k (..., T_k, D), temperature broadcastable to (..., 1, 1)
            -> scores (..., T_q, T_k), cache
    """
    q_norm = np.maximum(np.sqrt(np.sum(q * q, axis=-1, keepdims=True)), 1e-12)
    k_norm = np.maximum(np.sqrt(np.sum(k * k, axis=-1, keepdims=True)), 1e-12)
    qn, kn = q / q_norm, k / k_norm
    cos = qn @ np.swapaxes(kn, -1, -2)
    return temperature * cos, (qn, kn, q_norm, k_norm, cos, temperature)


def _normalize_backward(dxn, xn, x_norm):
    # xn = x / |x|: the Jacobian (I - xn xn^T) / |x| removes the radial part of the gradient.
    return (dxn - xn * np.sum(dxn * xn, axis=-1, keepdims=True)) / x_norm


def cosine_similarity_backward(dscores, cache):
    """Shapes: dscores (..., T_q, T_k) -> dq, dk, dtemperature (temperature's shape)"""
    qn, kn, q_norm, k_norm, cos, temperature = cache
    dtemp = dscores * cos  # scores = temperature * cos
    temperature = np.asarray(temperature)
    # sum over the axes temperature was broadcast along
    lead = dtemp.ndim - temperature.ndim
    dtemp = dtemp.sum(axis=tuple(range(lead)))
    dtemp = dtemp.sum(axis=tuple(i for i, n in enumerate(temperature.shape) if n == 1), keepdims=True)
    dcos = dscores * temperature
    dqn, dkn = dcos @ kn, np.swapaxes(dcos, -1, -2) @ qn  # cos = qn kn^T
    return _normalize_backward(dqn, qn, q_norm), _normalize_backward(dkn, kn, k_norm), dtemp.reshape(temperature.shape)


def aft_simple_forward(q, k, v):
    """AFT-simple (Zhai et al. 2021), causal: no (T, T) matrix at all. Each channel averages the values
    of the past with weights softmax over time of the keys, gated by sigmoid(q):

        y_t = sigmoid(q_t) * sum_{s<=t} exp(k_s) v_s / sum_{s<=t} exp(k_s)      (elementwise per channel)

    Both running sums are cumulative sums. k's per-channel maximum over time is subtracted first (it
    cancels in the ratio) so exp cannot overflow.

    Shapes: q, k, v (B, T, C) -> y (B, T, C), cache
    """
    e = np.exp(k - np.max(k, axis=1, keepdims=True))  # (B, T, C)
    num = np.cumsum(e * v, axis=1)  # sum_{s<=t} e_s v_s
    # den > 0 unless every key up to t lies ~87 (float32) below the channel's maximum over the whole
    # sequence, far outside what layer-normed inputs produce.
    den = np.cumsum(e, axis=1)  # sum_{s<=t} e_s
    avg = num / den
    gate = 1.0 / (1.0 + np.exp(-q))  # sigmoid
    return gate * avg, (v, e, den, avg, gate)


def _reverse_cumsum(x, axis):
    # The backward of a cumulative sum: position s receives the gradients of every t >= s.
    return np.flip(np.cumsum(np.flip(x, axis=axis), axis=axis), axis=axis)


def aft_simple_backward(dy, cache):
    """Shapes: dy (B, T, C) -> dq, dk, dv (B, T, C)"""
    v, e, den, avg, gate = cache
    dq = dy * avg * gate * (1.0 - gate)  # y = sigmoid(q) * avg
    davg = dy * gate
    dnum = davg / den  # avg = num / den
    dden = -davg * avg / den
    dnum_s = _reverse_cumsum(dnum, axis=1)  # num = cumsum(e v)
    dden_s = _reverse_cumsum(dden, axis=1)  # den = cumsum(e)
    dv = dnum_s * e  # e v
    dk = (dnum_s * v + dden_s) * e  # e = exp(k - max): the max cancels in num / den, so de/dk = e
    return dq, dk, dv


def neg_sq_distance(q, k, scale: float):
    """Shapes: q (..., T_q, D), k (..., T_k, D) -> (..., T_q, T_k)"""
    return neg_sq_distance_forward(q, k, scale)


def cosine_similarity(q, k, temperature):
    """Shapes: q (..., T_q, D), k (..., T_k, D), temperature broadcastable to (..., 1, 1) -> (..., T_q, T_k)"""
    return cosine_similarity_forward(q, k, temperature)[0]


def aft_simple(q, k, v):
    """Shapes: q, k, v (B, T, C) -> (B, T, C)"""
    return aft_simple_forward(q, k, v)[0]


# ----------------------------------------------------------------------------------------------
# the projections: shared (share_qkv) or small MLPs (qkv_mlp)


def project_qkv_forward(h, params: dict, config: GPTConfig):
    """q, k, v from h: linear projections (or small MLPs with config.qkv_mlp), each computed once
    even when shared. Linear ones run as ONE matmul with the stacked weights, as the straight block does.
    params: a layer's `attn.` keys without the prefix.

    Shapes: h (B, T, C) -> q, k, v (B, T, C), cache
    """
    C, src, names = config.n_embd, qkv_sources(config), qkv_projections(config)
    if config.qkv_mlp:
        outs, caches = {}, {}
        for n in names:
            outs[n], caches[n] = mlp_forward(h, _sub(params, f"mlp_{n}."))
        return outs[src["q"]], outs[src["k"]], outs[src["v"]], (h, names, caches)
    w = np.concatenate([params[f"w_{n}"] for n in names])  # (len(names) * C, C)
    y = linear(h, w, np.concatenate([params[f"b_{n}"] for n in names]))
    outs = {n: y[..., i * C:(i + 1) * C] for i, n in enumerate(names)}
    return outs[src["q"]], outs[src["k"]], outs[src["v"]], (h, names, w)


def project_qkv_backward(dq, dk, dv, cache, config: GPTConfig):
    """Shapes: dq, dk, dv (B, T, C) -> dh (B, T, C), grads of the projection parameters"""
    h, names, w_or_caches = cache
    src = qkv_sources(config)
    d = {n: None for n in names}
    for role, g in (("q", dq), ("k", dk), ("v", dv)):  # a shared projection sums its uses' gradients
        d[src[role]] = g if d[src[role]] is None else d[src[role]] + g
    grads = {}
    if config.qkv_mlp:
        dh = None
        for n in names:
            dh_n, g = mlp_backward(d[n], w_or_caches[n])
            grads.update({f"mlp_{n}.{k}": v for k, v in g.items()})
            dh = dh_n if dh is None else dh + dh_n
        return dh, grads
    C = config.n_embd
    dh, dw, db = linear_backward(np.concatenate([d[n] for n in names], axis=-1), h, w_or_caches)  # y = h W^T + b
    for i, n in enumerate(names):
        grads[f"w_{n}"], grads[f"b_{n}"] = dw[i * C:(i + 1) * C], db[i * C:(i + 1) * C]
    return dh, grads


def project_qkv(h, params: dict, config: GPTConfig):
    """Shapes: h (B, T, C) -> q, k, v (B, T, C)"""
    return project_qkv_forward(h, params, config)[:3]


# ----------------------------------------------------------------------------------------------
# the attention with every experiment


class AttentionCache(NamedTuple):
    """What attention_forward keeps for attention_backward (softmax attention; D = C / H)."""
    proj: tuple  # project_qkv_forward's cache
    q: np.ndarray  # (B, H, T, D) queries after RoPE, times scale for the dot similarity
    k: np.ndarray  # (B, H, T, D) keys after RoPE
    v: np.ndarray  # (B, H, T, D)
    scale: float  # 1 / sqrt(D)
    sim: tuple | None  # cosine_similarity_forward's cache; None for the other similarities
    scores: np.ndarray  # (B, H, T, T) similarities (+ ALiBi), before masking
    mask: np.ndarray  # (T, T) bool, True where query t may see key s
    weights: np.ndarray  # (B, H, T, T) after the softmax and the mask
    dropped: np.ndarray  # (B, H, T, T) weights after dropout (the same array without dropout)
    drop: np.ndarray | None  # (B, H, T, T) scaled keep-mask, None without dropout
    merged: np.ndarray  # (B, T, C) the heads' outputs side by side
    w_o: np.ndarray  # (C, C)
    log_temp: np.ndarray | None  # (H,) the cosine's log temperatures; None for the others


class AFTCache(NamedTuple):
    """What attention_forward keeps with attention="aft_simple"."""
    proj: tuple  # project_qkv_forward's cache
    core: tuple  # aft_simple_forward's cache
    y: np.ndarray  # (B, T, C) AFT-simple's output, before W_o
    w_o: np.ndarray  # (C, C)


def _scores(q, k, params: dict, config: GPTConfig):
    """The similarity of every query with every key (+ ALiBi). Shapes: q, k (B, H, T, D) -> q, scores, sim"""
    scale = 1.0 / math.sqrt(q.shape[-1])
    if config.similarity == "dot":
        q = q * scale  # (q * scale) k^T = (q k^T) * scale, touching T*D numbers instead of T*T
        scores, sim = pairwise_similarities(q, k), None
    elif config.similarity == "neg_sq_dist":
        scores, sim = neg_sq_distance_forward(q, k, scale), None
    else:  # cosine, one learned temperature per head, stored as its log so it stays positive
        scores, sim = cosine_similarity_forward(q, k, np.exp(params["log_temp"])[:, None, None])
    if config.positions == "alibi":
        # A constant per-head penalty on distance, added after the scale as torch SDPA adds a float mask.
        scores = scores + _alibi(q.shape[1], scores.shape[-1], scores.dtype.name)  # (B, H, T, T) + (H, T, T)
    return q, scale, scores, sim


def attention_forward(h, params: dict, config: GPTConfig, mask, rng=None):
    """Causal self-attention with the experiments the config names. params: this layer's `attn.` keys
    without the prefix (w_q, b_q, ..., w_o, b_o, log_temp, mlp_q.w_fc, ...).

    Shapes: h (B, T, C), mask (T, T) -> out (B, T, C), AttentionCache | AFTCache
    """
    q, k, v, proj = project_qkv_forward(h, params, config)  # (B, T, C) each
    if config.attention == "aft_simple":  # no heads, no (T, T) weights
        y, core = aft_simple_forward(q, k, v)
        return linear(y, params["w_o"], params["b_o"]), AFTCache(proj, core, y, params["w_o"])
    H = config.n_head
    q, k, v = split_heads(q, H), split_heads(k, H), split_heads(v, H)  # (B, H, T, D)
    if config.positions == "rope":
        q, k = apply_rope(q), apply_rope(k)  # rotate queries and keys, never values
    q, scale, scores, sim = _scores(q, k, params, config)
    if config.post_softmax_mask:  # the wrong way, for the experiment: future keys still normalise
        weights = wrong_zero_after_softmax(scores, mask)
    else:
        weights = attn_softmax(scores, mask)  # (B, H, T, T)
    dropped, drop = dropout_forward(weights, config.dropout, rng)
    merged = merge_heads(compute_outputs(dropped, v))  # (B, T, C)
    out = linear(merged, params["w_o"], params["b_o"])
    return out, AttentionCache(proj, q, k, v, scale, sim, scores, mask, weights, dropped, drop, merged,
                               params["w_o"], params.get("log_temp"))


def _scores_backward(dscores, c: AttentionCache, config: GPTConfig, g: dict):
    # scores = similarity + alibi_bias: the bias is a constant, so dscores is also d similarity
    if config.similarity == "dot":
        dq, dk = pairwise_similarities_backward(dscores, c.q, c.k)  # scores = (q * scale) k^T
        dq *= c.scale  # q * scale
    elif config.similarity == "neg_sq_dist":
        dq, dk = neg_sq_distance_backward(dscores, c.q, c.k, c.scale)
    else:
        dq, dk, dtemp = cosine_similarity_backward(dscores, c.sim)
        g["log_temp"] = dtemp.reshape(-1) * np.exp(c.log_temp)  # temperature = exp(log_temp)
    return dq, dk


def attention_backward(dout, cache, config: GPTConfig):
    """Shapes: dout (B, T, C) -> dh (B, T, C), grads of this layer's attention params"""
    g, c = {}, cache
    if config.attention == "aft_simple":
        dy, g["w_o"], g["b_o"] = linear_backward(dout, c.y, c.w_o)  # out = y W_o^T + b_o
        dq, dk, dv = aft_simple_backward(dy, c.core)  # y = aft_simple(q, k, v)
    else:
        dmerged, g["w_o"], g["b_o"] = linear_backward(dout, c.merged, c.w_o)  # out = merged W_o^T + b_o
        dheads = merge_heads_backward(dmerged, config.n_head)  # merged = merge_heads(heads)
        ddropped, dv = compute_outputs_backward(dheads, c.dropped, c.v)  # heads = dropped v
        dweights = dropout_backward(ddropped, c.drop)  # dropped = dropout(weights)
        if config.post_softmax_mask:
            dscores = wrong_zero_after_softmax_backward(dweights, c.scores, c.mask)  # weights = softmax(scores) * mask
        else:
            dscores = attn_softmax_backward(dweights, c.weights)  # weights = softmax(masked scores)
        dq, dk = _scores_backward(dscores, c, config, g)
        if config.positions == "rope":
            dq, dk = apply_rope_backward(dq), apply_rope_backward(dk)  # q, k = rope(q), rope(k)
        dq, dk, dv = split_heads_backward(dq), split_heads_backward(dk), split_heads_backward(dv)  # split_heads
    dh, g_proj = project_qkv_backward(dq, dk, dv, c.proj, config)  # q, k, v = projections of h
    g.update(g_proj)
    return dh, g


def attention(h, params: dict, config: GPTConfig, rng=None):
    """Causal (query t sees keys 0..t). Shapes: h (B, T, C) -> (B, T, C)"""
    return attention_forward(h, params, config, make_causal_mask(h.shape[1]), rng)[0]


def block_attention(config: GPTConfig) -> BlockAttention | None:
    """The attention to plug into layers.transformer_block_forward for this config: None when the
    config asks for none of the experiments (the block's own multi-head attention), else this module's."""
    if straight_attention(config):
        return None
    return BlockAttention(lambda h, params, mask, rng: attention_forward(h, params, config, mask, rng),
                          partial(attention_backward, config=config))


# ----------------------------------------------------------------------------------------------
# the embeddings' positions


def add_positions_forward(tok, params: dict, config: GPTConfig):
    """The token embeddings (times sqrt(C) with config.scale_embeddings) plus the config's position
    signal: wpe[:T] (learned), the sinusoidal table, or nothing (none, and rope / alibi, which act
    inside attention).

    Shapes: tok (B, T, C) -> x (B, T, C), cache (the config and wpe)
    """
    T = tok.shape[1]
    x = tok * math.sqrt(config.n_embd) if config.scale_embeddings else tok  # a Python float keeps float32 float32
    if config.positions == "learned":
        x = x + params["wpe.weight"][:T]
    elif config.positions == "sinusoidal":
        x = x + _sinusoidal(T, config.n_embd, x.dtype.name)
    return x, (config, params.get("wpe.weight"))


def add_positions_backward(dx, cache):
    """Shapes: dx (B, T, C) -> dtok (B, T, C), grads ({"wpe.weight"} with learned positions)"""
    (config, wpe), grads = cache, {}
    if config.positions == "learned":
        dx, grads["wpe.weight"] = learned_positional_encoding_backward(dx, wpe)  # x = tok + wpe[:T]
    if config.scale_embeddings:
        dx = dx * math.sqrt(config.n_embd)  # tok * sqrt(C)
    return dx, grads


def add_positions(tok, params: dict, config: GPTConfig):
    """Shapes: tok (B, T, C) -> (B, T, C)"""
    return add_positions_forward(tok, params, config)[0]
