"""A minGPT-style decoder in plain NumPy, trained with hand-written gradients (no autograd).

    x = wte[idx] (+ wpe[:T] | + sinusoidal[:T])         token (+ position) embedding, dropout
    n_layer times:
        x = x + dropout(attn(ln_1(x)))                   causal multi-head attention (RoPE on q, k)
        x = x + dropout(mlp(ln_2(x)))                    C -> 4C -> GELU -> C
    logits = ln_f(x) wte^T                               the head is tied to the token embedding

The weights are common.gpt_config's flat dict (the same keys run in jax_impl.gpt and torch_ref.gpt).
gpt_loss_and_grads runs the forward keeping each layer's cache, then walks the model backwards with
the `*_backward` functions of numpy_impl.layers / attention / multihead / positional / losses.

Dropout is off unless an rng (np.random.Generator) is passed and config.dropout > 0.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from common.checks import InputError, check_ndim
from common.gpt_config import GPTConfig
from numpy_impl.attention import (
    attn_softmax,
    attn_softmax_backward,
    compute_outputs,
    compute_outputs_backward,
    pairwise_similarities,
    pairwise_similarities_backward,
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
from numpy_impl.masks import make_causal_mask
from numpy_impl.multihead import linear, linear_backward, merge_heads, merge_heads_backward, split_heads, split_heads_backward
from numpy_impl.positional import apply_rope, apply_rope_backward, learned_positional_encoding_backward, sinusoidal_encoding

__all__ = ["gpt_forward", "gpt_loss", "gpt_loss_and_grads"]


@lru_cache(maxsize=16)
def _sinusoidal(T: int, C: int, dtype_name: str) -> np.ndarray:
    table = sinusoidal_encoding(T, C, dtype=np.dtype(dtype_name))
    table.flags.writeable = False  # shared between calls
    return table


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


def _layer(params: dict, i: int, part: str) -> dict:
    prefix = f"h.{i}.{part}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------
# causal self-attention


def attention_forward(h, p: dict, config: GPTConfig, mask, rng):
    """Causal multi-head self-attention with the GPT's options (RoPE, dropout on the weights).
    p: the multi-head params dict (w_q, b_q, ..., w_o, b_o).

    Shapes: h (B, T, C), mask (T, T) -> out (B, T, C), cache
    """
    H, C = config.n_head, config.n_embd
    # The three projections as ONE matmul with the stacked (3C, C) matrix (torch's in_proj layout):
    # the same numbers as three separate linears, but one large product runs faster than three.
    w_qkv = np.concatenate([p["w_q"], p["w_k"], p["w_v"]])
    qkv = linear(h, w_qkv, np.concatenate([p["b_q"], p["b_k"], p["b_v"]]))  # (B, T, 3C)
    q, k, v = (split_heads(qkv[..., i * C:(i + 1) * C], H) for i in range(3))  # (B, H, T, D) views
    if config.positions == "rope":
        q, k = apply_rope(q), apply_rope(k)  # rotate queries and keys, never values
    scale = 1.0 / math.sqrt(q.shape[-1])
    # (q * scale) k^T equals (q k^T) * scale; scaling q touches T*D numbers instead of T*T.
    q = q * scale
    weights = attn_softmax(pairwise_similarities(q, k), mask)  # (B, H, T, T)
    dropped, drop_cache = dropout_forward(weights, config.dropout, rng)
    merged = merge_heads(compute_outputs(dropped, v))  # (B, T, C)
    out = linear(merged, p["w_o"], p["b_o"])
    return out, (h, w_qkv, q, k, v, scale, weights, dropped, drop_cache, merged, p["w_o"])


def attention_backward(dout, cache, config: GPTConfig):
    """Shapes: dout (B, T, C) -> dh (B, T, C), grads {w_q, b_q, ..., w_o, b_o}"""
    h, w_qkv, q, k, v, scale, weights, dropped, drop_cache, merged, w_o = cache
    C = config.n_embd
    g = {}
    dmerged, g["w_o"], g["b_o"] = linear_backward(dout, merged, w_o)  # out = merged W_o^T + b_o
    dheads = merge_heads_backward(dmerged, config.n_head)  # merged = merge_heads(heads)
    ddropped, dv = compute_outputs_backward(dheads, dropped, v)  # heads = dropped v
    dweights = dropout_backward(ddropped, drop_cache)  # dropped = dropout(weights)
    dscores = attn_softmax_backward(dweights, weights)  # weights = softmax(masked scores)
    dq, dk = pairwise_similarities_backward(dscores, q, k)  # scores = (q * scale) k^T
    dq *= scale  # q * scale
    if config.positions == "rope":
        dq, dk = apply_rope_backward(dq), apply_rope_backward(dk)  # q, k = rope(q), rope(k)
    # qkv = h W_qkv^T + b_qkv, then cut into q, k, v: put the three gradients side by side again.
    dqkv = np.concatenate([split_heads_backward(d) for d in (dq, dk, dv)], axis=-1)  # (B, T, 3C)
    dh, dw_qkv, db_qkv = linear_backward(dqkv, h, w_qkv)
    for i, name in enumerate("qkv"):
        g[f"w_{name}"], g[f"b_{name}"] = dw_qkv[i * C:(i + 1) * C], db_qkv[i * C:(i + 1) * C]
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
    # The tied matrix is used twice (lookup and head), so its gradient is the sum of both uses.
    grads["wte.weight"] = embedding_backward(dx, emb) + dwte_head  # tok = wte[idx]
    return float(loss), {k: grads[k] for k in params}
