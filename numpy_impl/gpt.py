"""A minGPT-style decoder in plain NumPy, trained with hand-written gradients (no autograd).

    x = wte[idx] (* sqrt(C)) (+ wpe[:T] | + sinusoidal[:T])   token (+ position) embedding, dropout
    n_layer times:
        x = x + dropout(attn(ln_1(x)))                   causal multi-head attention (RoPE on q, k,
                                                         or ALiBi's bias on the scores)
        x = x + dropout(mlp(ln_2(x)))                    C -> 4C -> GELU -> C
    logits = ln_f(x) wte^T                               the head is tied to the token embedding

The weights are common.gpt_config's flat dict (the same keys run in jax_impl.gpt and torch_ref.gpt).
gpt_loss_and_grads runs the forward keeping each layer's cache, then walks the model backwards with
the `*_backward` functions of numpy_impl.layers / attention / multihead / positional / losses.

Dropout is off unless an rng (np.random.Generator) is passed and config.dropout > 0.

The course's attention experiments are GPTConfig fields (similarity, share_qkv, post_softmax_mask,
qkv_mlp, attention; triptych/common/gpt_config.py lists them with their extra weight keys). Each replaces one
step of the attention below and brings its own backward.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from triptych.common.checks import InputError, check_ndim
from triptych.common.gpt_config import GPTConfig, qkv_projections, qkv_sources
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
from numpy_impl.layers import (
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    layer_norm_backward,
    layer_norm_forward,
    mlp_backward,
    mlp_forward,
)
from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward
from numpy_impl.masks import alibi_bias, make_causal_mask
from numpy_impl.multihead import linear, linear_backward, merge_heads, merge_heads_backward, split_heads, split_heads_backward
from numpy_impl.positional import apply_rope, apply_rope_backward, learned_positional_encoding_backward, sinusoidal_encoding

__all__ = ["gpt_forward", "gpt_loss", "gpt_loss_and_grads"]


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


def _check_idx(name: str, idx, config: GPTConfig) -> np.ndarray:
    idx = np.asarray(idx)
    check_ndim(name, idx, 2, "(B, T) token ids")
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"{name}: expected integer token ids, got dtype {idx.dtype}")
    if idx.shape[1] == 0:
        raise InputError(f"{name}: expected at least one position, got shape {idx.shape}")
    if config.positions == "learned" and idx.shape[1] > config.block_size:
        raise InputError(
            f"{name}: expected at most block_size={config.block_size} positions with learned positions "
            f"(the table has no rows beyond), got {idx.shape[1]}"
        )
    return idx


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _layer(params: dict, i: int, part: str) -> dict:
    return _sub(params, f"h.{i}.{part}.")


# ----------------------------------------------------------------------------------------------
# the course's attention experiments (docs/course.md, section I): the pieces that
# replace a step of standard attention, each with its backward


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


# ----------------------------------------------------------------------------------------------
# causal self-attention


def project_qkv_forward(h, p: dict, config: GPTConfig):
    """q, k, v from h: linear projections (or small MLPs with config.qkv_mlp), each computed once
    even when shared. Linear ones run as ONE matmul with the stacked weights (torch's in_proj
    layout): the same numbers as separate linears, but one large product is faster.

    Shapes: h (B, T, C) -> q, k, v (B, T, C), cache
    """
    C, src, names = config.n_embd, qkv_sources(config), qkv_projections(config)
    if config.qkv_mlp:
        outs, caches = {}, {}
        for n in names:
            outs[n], caches[n] = mlp_forward(h, _sub(p, f"mlp_{n}."))
        return outs[src["q"]], outs[src["k"]], outs[src["v"]], (h, names, caches)
    w = np.concatenate([p[f"w_{n}"] for n in names])  # (len(names) * C, C)
    y = linear(h, w, np.concatenate([p[f"b_{n}"] for n in names]))
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


def attention_forward(h, p: dict, config: GPTConfig, mask, rng):
    """Causal self-attention with the GPT's options: RoPE or ALiBi, dropout on the weights, and the course's
    experiments (similarity function, shared or MLP projections, naive post-softmax masking,
    AFT-simple). p: this layer's `attn.` params without the prefix (w_q, b_q, ..., w_o, b_o, ...).

    Shapes: h (B, T, C), mask (T, T) -> out (B, T, C), cache
    """
    q, k, v, proj = project_qkv_forward(h, p, config)  # (B, T, C) each
    if config.attention == "aft_simple":  # no heads, no (T, T) weights
        y, core = aft_simple_forward(q, k, v)
        out = linear(y, p["w_o"], p["b_o"])
        return out, (proj, core, y, p["w_o"])
    H = config.n_head
    q, k, v = split_heads(q, H), split_heads(k, H), split_heads(v, H)  # (B, H, T, D)
    if config.positions == "rope":
        q, k = apply_rope(q), apply_rope(k)  # rotate queries and keys, never values
    scale = 1.0 / math.sqrt(q.shape[-1])
    if config.similarity == "dot":
        q = q * scale  # (q * scale) k^T = (q k^T) * scale, touching T*D numbers instead of T*T
        scores, sim = pairwise_similarities(q, k), None
    elif config.similarity == "neg_sq_dist":
        scores, sim = neg_sq_distance_forward(q, k, scale), None
    else:  # cosine, one learned temperature per head, stored as its log so it stays positive
        scores, sim = cosine_similarity_forward(q, k, np.exp(p["log_temp"])[:, None, None])
    if config.positions == "alibi":
        # A constant per-head penalty on distance, added after the scale as torch SDPA adds a float mask.
        scores = scores + _alibi(H, scores.shape[-1], scores.dtype.name)  # (B, H, T, T) + (H, T, T)
    if config.post_softmax_mask:  # the wrong way, for the experiment: future keys still normalise
        weights = wrong_zero_after_softmax(scores, mask)
    else:
        weights = attn_softmax(scores, mask)  # (B, H, T, T)
    dropped, drop_cache = dropout_forward(weights, config.dropout, rng)
    merged = merge_heads(compute_outputs(dropped, v))  # (B, T, C)
    out = linear(merged, p["w_o"], p["b_o"])
    return out, (proj, q, k, v, scale, sim, scores, mask, weights, dropped, drop_cache, merged, p["w_o"], p.get("log_temp"))


def attention_backward(dout, cache, config: GPTConfig):
    """Shapes: dout (B, T, C) -> dh (B, T, C), grads of this layer's attention params"""
    g = {}
    if config.attention == "aft_simple":
        proj, core, y, w_o = cache
        dy, g["w_o"], g["b_o"] = linear_backward(dout, y, w_o)  # out = y W_o^T + b_o
        dq, dk, dv = aft_simple_backward(dy, core)  # y = aft_simple(q, k, v)
    else:
        proj, q, k, v, scale, sim, scores, mask, weights, dropped, drop_cache, merged, w_o, log_temp = cache
        dmerged, g["w_o"], g["b_o"] = linear_backward(dout, merged, w_o)  # out = merged W_o^T + b_o
        dheads = merge_heads_backward(dmerged, config.n_head)  # merged = merge_heads(heads)
        ddropped, dv = compute_outputs_backward(dheads, dropped, v)  # heads = dropped v
        dweights = dropout_backward(ddropped, drop_cache)  # dropped = dropout(weights)
        if config.post_softmax_mask:
            dscores = wrong_zero_after_softmax_backward(dweights, scores, mask)  # weights = softmax(scores) * mask
        else:
            dscores = attn_softmax_backward(dweights, weights)  # weights = softmax(masked scores)
        # scores = similarity + alibi_bias: the bias is a constant, so dscores is also d similarity
        if config.similarity == "dot":
            dq, dk = pairwise_similarities_backward(dscores, q, k)  # scores = (q * scale) k^T
            dq *= scale  # q * scale
        elif config.similarity == "neg_sq_dist":
            dq, dk = neg_sq_distance_backward(dscores, q, k, scale)
        else:
            dq, dk, dtemp = cosine_similarity_backward(dscores, sim)
            g["log_temp"] = dtemp.reshape(-1) * np.exp(log_temp)  # temperature = exp(log_temp)
        if config.positions == "rope":
            dq, dk = apply_rope_backward(dq), apply_rope_backward(dk)  # q, k = rope(q), rope(k)
        dq, dk, dv = split_heads_backward(dq), split_heads_backward(dk), split_heads_backward(dv)  # split_heads
    dh, g_proj = project_qkv_backward(dq, dk, dv, proj, config)  # q, k, v = projections of h
    g.update(g_proj)
    return dh, g


# ----------------------------------------------------------------------------------------------
# block


def block_forward(x, params: dict, i: int, config: GPTConfig, mask, rng):
    """Layer i: x + dropout(attn(ln_1(x))), then + dropout(mlp(ln_2(x))).

    Shapes: x (B, T, C) -> out (B, T, C), cache
    """
    pre = f"h.{i}."
    h1, ln1 = layer_norm_forward(x, params[pre + "ln_1.weight"], params[pre + "ln_1.bias"])
    a, attn = attention_forward(h1, _layer(params, i, "attn"), config, mask, rng)
    a, drop1 = dropout_forward(a, config.dropout, rng)
    x = x + a
    h2, ln2 = layer_norm_forward(x, params[pre + "ln_2.weight"], params[pre + "ln_2.bias"])
    m, mlp = mlp_forward(h2, _layer(params, i, "mlp"))
    m, drop2 = dropout_forward(m, config.dropout, rng)
    return x + m, (ln1, attn, drop1, ln2, mlp, drop2)


def block_backward(dout, cache, i: int, config: GPTConfig, grads: dict):
    """Writes layer i's parameter gradients into `grads`. Shapes: dout (B, T, C) -> dx (B, T, C)"""
    ln1, attn, drop1, ln2, mlp, drop2 = cache
    pre = f"h.{i}."
    # out = x1 + dropout(mlp(ln_2(x1))): the residual passes dout through, the branch adds to it.
    dh2, g = mlp_backward(dropout_backward(dout, drop2), mlp)
    grads.update({pre + "mlp." + n: t for n, t in g.items()})
    dx1, grads[pre + "ln_2.weight"], grads[pre + "ln_2.bias"] = layer_norm_backward(dh2, ln2)
    dx1 += dout
    # x1 = x + dropout(attn(ln_1(x)))
    dh1, g = attention_backward(dropout_backward(dx1, drop1), attn, config)
    grads.update({pre + "attn." + n: t for n, t in g.items()})
    dx, grads[pre + "ln_1.weight"], grads[pre + "ln_1.bias"] = layer_norm_backward(dh1, ln1)
    dx += dx1
    return dx


# ----------------------------------------------------------------------------------------------
# the model


def _forward(params: dict, idx, config: GPTConfig, rng):
    B, T = idx.shape
    x, emb = embedding_forward(idx, params["wte.weight"])  # (B, T, C)
    if config.scale_embeddings:
        x = x * math.sqrt(config.n_embd)  # a Python float keeps float32 float32
    if config.positions == "learned":
        x = x + params["wpe.weight"][:T]
    elif config.positions == "sinusoidal":
        x = x + _sinusoidal(T, config.n_embd, x.dtype.name)
    x, drop = dropout_forward(x, config.dropout, rng)
    mask = make_causal_mask(T)  # (T, T): query t sees keys 0..t
    blocks = []
    for i in range(config.n_layer):
        x, cache = block_forward(x, params, i, config, mask, rng)
        blocks.append(cache)
    xf, lnf = layer_norm_forward(x, params["ln_f.weight"], params["ln_f.bias"])
    logits = linear(xf, params["wte.weight"])  # (B, T, V), tied head, no bias
    return logits, (emb, drop, blocks, xf, lnf)


def gpt_forward(params: dict, idx, config: GPTConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """Next-token logits at every position.

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    return _forward(params, _check_idx("idx", idx, config), config, rng)[0]


def gpt_loss(params: dict, idx, targets, config: GPTConfig, rng: np.random.Generator | None = None) -> float:
    """Mean cross-entropy of the next-token predictions (targets == -100 are ignored).

    Shapes: idx (B, T), targets (B, T) ints -> float
    """
    logits = gpt_forward(params, idx, config, rng)
    return float(cross_entropy_forward(logits, np.asarray(targets))[0])


def gpt_loss_and_grads(params: dict, idx, targets, config: GPTConfig,
                       rng: np.random.Generator | None = None) -> tuple[float, dict]:
    """The loss and its gradient for every parameter, by hand: forward with caches, then backward.

    Shapes: idx (B, T), targets (B, T) ints -> (float, grads with the keys and shapes of params)
    """
    idx = _check_idx("idx", idx, config)
    logits, (emb, drop, blocks, xf, lnf) = _forward(params, idx, config, rng)
    loss, ce = cross_entropy_forward(logits, np.asarray(targets))
    grads: dict[str, np.ndarray] = {}

    dlogits = cross_entropy_backward(1.0, ce)  # loss = cross_entropy(logits, targets)
    dxf, dwte_head, _ = linear_backward(dlogits, xf, params["wte.weight"])  # logits = xf wte^T
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(dxf, lnf)  # xf = ln_f(x)
    for i in reversed(range(config.n_layer)):
        dx = block_backward(dx, blocks[i], i, config, grads)  # x = block_i(x)
    dx = dropout_backward(dx, drop)  # x = dropout(embeddings)
    if config.positions == "learned":
        dx, grads["wpe.weight"] = learned_positional_encoding_backward(dx, params["wpe.weight"])  # x = tok + wpe[:T]
    if config.scale_embeddings:
        dx = dx * math.sqrt(config.n_embd)  # tok = wte[idx] * sqrt(C)
    # The tied matrix is used twice (lookup and head), so its gradient is the sum of both uses.
    grads["wte.weight"] = embedding_backward(dx, emb) + dwte_head  # tok = wte[idx]
    # A parameter the configuration never reads (say w_k while K shares Q's projection) does not
    # affect the loss: its gradient is zero.
    return float(loss), {k: grads[k] if k in grads else np.zeros_like(v) for k, v in params.items()}
