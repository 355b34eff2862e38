"""A minGPT-style decoder in plain NumPy, trained with hand-written gradients (no autograd).

    x = wte[idx] + wpe[:T]                               token + position embedding, dropout
    n_layer times (layers.transformer_block_forward):
        x = x + dropout(attn(ln_1(x)))                   causal multi-head attention
        x = x + dropout(mlp(ln_2(x)))                    C -> 4C -> GELU -> C
    logits = ln_f(x) wte^T                               the head is tied to the token embedding

The weights are common.gpt_config's flat dict (the same keys run in jax_impl.gpt and torch_ref.gpt).
gpt_loss_and_grads runs the forward keeping each layer's cache, then walks the model backwards with
the `*_backward` functions of numpy_impl.layers / multihead / losses.

Dropout is off unless an rng (np.random.Generator) is passed and config.dropout > 0.

The course's experiments (GPTConfig's positions other than learned, scale_embeddings, similarity,
share_qkv, post_softmax_mask, qkv_mlp, attention) live in numpy_impl.gpt_variants: the model below
asks it for the embeddings' positions and for the attention to plug into each block, and runs the
straight GPT above when the config names none.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from triptych.common.gpt_config import GPTConfig, check_idx, straight_embeddings
from numpy_impl import gpt_variants
from numpy_impl.layers import (
    BlockCache,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    layer_norm_backward,
    layer_norm_forward,
    transformer_block_backward,
    transformer_block_forward,
)
from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward
from numpy_impl.masks import make_causal_mask
from numpy_impl.multihead import linear, linear_backward
from numpy_impl.positional import learned_positional_encoding_backward

__all__ = ["gpt_forward", "gpt_loss", "gpt_loss_and_grads"]


class GPTCache(NamedTuple):
    """What the forward keeps for gpt_loss_and_grads (B batch, T positions, C = n_embd)."""
    emb: tuple  # embedding_forward's cache: idx (B, T) and the table's shape (V, C)
    positions: tuple | None  # gpt_variants.add_positions_forward's cache; None for wte[idx] + wpe[:T]
    drop: np.ndarray | None  # (B, T, C) scaled keep-mask of the embedding dropout, None without dropout
    blocks: list[BlockCache]  # one per layer, layers.transformer_block_forward's
    xf: np.ndarray  # (B, T, C) ln_f(x), the head's input
    ln_f: tuple  # layer_norm_forward's cache of xf


def _check_idx(name: str, idx, config: GPTConfig) -> np.ndarray:
    idx = np.asarray(idx)
    check_idx(name, idx, config)
    return idx


def _layer(params: dict, i: int) -> dict:
    """Layer i's weights without their `h.{i}.` prefix: the keys transformer_block_forward reads."""
    prefix = f"h.{i}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _forward(params: dict, idx, config: GPTConfig, rng):
    T = idx.shape[1]
    x, emb = embedding_forward(idx, params["wte.weight"])  # (B, T, C)
    if straight_embeddings(config):
        x, positions = x + params["wpe.weight"][:T], None  # learned positions
    else:  # sinusoidal, none, scaled tokens: the experiments' embeddings
        x, positions = gpt_variants.add_positions_forward(x, params, config)
    x, drop = dropout_forward(x, config.dropout, rng)
    mask = make_causal_mask(T)  # (T, T): query t sees keys 0..t
    attention = gpt_variants.block_attention(config)  # None: the block's own multi-head attention
    blocks = []
    for i in range(config.n_layer):
        x, cache = transformer_block_forward(x, _layer(params, i), config.n_head, mask, config.dropout, rng, attention)
        blocks.append(cache)
    xf, ln_f = layer_norm_forward(x, params["ln_f.weight"], params["ln_f.bias"])
    logits = linear(xf, params["wte.weight"])  # (B, T, V), tied head, no bias
    return logits, GPTCache(emb, positions, drop, blocks, xf, ln_f)


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


def _backward(dlogits, params: dict, cache: GPTCache, config: GPTConfig) -> dict:
    """The forward's steps in reverse. Shapes: dlogits (B, T, V) -> grads of the params the config reads"""
    grads: dict[str, np.ndarray] = {}
    dxf, dwte_head, _ = linear_backward(dlogits, cache.xf, params["wte.weight"])  # logits = xf wte^T
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(dxf, cache.ln_f)  # xf = ln_f(x)
    for i in reversed(range(config.n_layer)):
        dx, g = transformer_block_backward(dx, cache.blocks[i])  # x = block_i(x)
        grads.update({f"h.{i}.{k}": v for k, v in g.items()})
    dx = dropout_backward(dx, cache.drop)  # x = dropout(embeddings)
    if cache.positions is None:
        dx, grads["wpe.weight"] = learned_positional_encoding_backward(dx, params["wpe.weight"])  # x = tok + wpe[:T]
    else:
        dx, g = gpt_variants.add_positions_backward(dx, cache.positions)
        grads.update(g)
    # The tied matrix is used twice (lookup and head), so its gradient is the sum of both uses.
    grads["wte.weight"] = embedding_backward(dx, cache.emb) + dwte_head  # tok = wte[idx]
    return grads


def gpt_loss_and_grads(params: dict, idx, targets, config: GPTConfig,
                       rng: np.random.Generator | None = None) -> tuple[float, dict]:
    """The loss and its gradient for every parameter, by hand: forward with caches, then backward.

    Shapes: idx (B, T), targets (B, T) ints -> (float, grads with the keys and shapes of params)
    """
    logits, cache = _forward(params, _check_idx("idx", idx, config), config, rng)
    loss, ce = cross_entropy_forward(logits, np.asarray(targets))
    grads = _backward(cross_entropy_backward(1.0, ce), params, cache, config)  # loss = cross_entropy(logits, targets)
    # A parameter the configuration never reads (say w_k while K shares Q's projection) does not
    # affect the loss: its gradient is zero.
    return float(loss), {k: grads[k] if k in grads else np.zeros_like(v) for k, v in params.items()}
