"""The tiny GPT in JAX: the same forward as a pure function of the weight dict, differentiated by
jax.value_and_grad and compiled by jax.jit (the config is a static argument, so each configuration
compiles once per input shape).

    x = wte[idx] + wpe[:T]
    n_layer times:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))     causal multi-head attention
    logits = ln_f(x) wte^T                                tied head

Dropout takes a jax PRNG key. The course's experiments (positions other than learned, scale_embeddings,
similarity, share_qkv, post_softmax_mask, qkv_mlp, attention) live in jax_impl.gpt_variants, as in
numpy_impl.gpt: the model asks it for the embeddings' positions and for each block's attention.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from triptych.common.gpt_config import GPTConfig, check_idx, straight_embeddings
from jax_impl import gpt_variants
from jax_impl._gpt_ops import dropout, gelu, linear, ln

__all__ = ["gpt_forward", "gpt_loss", "gpt_loss_and_grads"]


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _attention(h, p: dict, n_head: int, p_drop: float, key):
    """softmax(q k^T / sqrt(D), causal) v over n_head heads. p: a layer's `attn.` keys without the prefix.
    Shapes: h (B, T, C) -> (B, T, C), the next dropout key"""
    B, T, C = h.shape
    D = C // n_head
    q, k, v = (linear(h, p[f"w_{n}"], p[f"b_{n}"]) for n in "qkv")
    q, k, v = (t.reshape(B, T, n_head, D).transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, H, T, D)
    scale = 1.0 / math.sqrt(D)  # a Python float is weakly typed: float32 inputs stay float32 (np.float64 would not)
    scores = (q * scale) @ k.swapaxes(-1, -2)
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    weights, key = dropout(jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1), p_drop, key)
    y = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return linear(y, p["w_o"], p["b_o"]), key


def _block(x, p: dict, config: GPTConfig, key, attention):
    """x + dropout(attn(ln_1(x))), then + dropout(mlp(ln_2(x))). p: layer i's keys without `h.{i}.`
    Shapes: x (B, T, C) -> (B, T, C), the next dropout key"""
    h = ln(x, p["ln_1.weight"], p["ln_1.bias"])
    if attention is None:
        a, key = _attention(h, _sub(p, "attn."), config.n_head, config.dropout, key)
    else:
        a, key = attention(h, _sub(p, "attn."), key)
    a, key = dropout(a, config.dropout, key)
    x = x + a
    h = gelu(linear(ln(x, p["ln_2.weight"], p["ln_2.bias"]), p["mlp.w_fc"], p["mlp.b_fc"]))
    m, key = dropout(linear(h, p["mlp.w_proj"], p["mlp.b_proj"]), config.dropout, key)
    return x + m, key


def _logits(params, idx, config: GPTConfig, key=None):
    p, T = params, idx.shape[1]
    x = p["wte.weight"][idx]
    if straight_embeddings(config):
        x = x + p["wpe.weight"][:T]
    else:
        x = gpt_variants.add_positions(x, p, config)
    x, key = dropout(x, config.dropout, key)
    attention = gpt_variants.block_attention(config)  # None: the straight multi-head attention above
    for i in range(config.n_layer):
        x, key = _block(x, _sub(p, f"h.{i}."), config, key, attention)
    return linear(ln(x, p["ln_f.weight"], p["ln_f.bias"]), p["wte.weight"])


def _loss(params, idx, targets, config: GPTConfig, key=None):
    logits = _logits(params, idx, config, key)
    logp = jax.nn.log_softmax(logits, axis=-1)
    valid = targets != -100
    picked = jnp.take_along_axis(logp, jnp.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    return -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.maximum(valid.sum(), 1)


_jit_logits = jax.jit(_logits, static_argnums=2)
_jit_loss = jax.jit(_loss, static_argnums=3)
_jit_loss_and_grads = jax.jit(jax.value_and_grad(_loss), static_argnums=3)


def _check_idx(name: str, idx, config: GPTConfig):
    idx = jnp.asarray(idx)
    check_idx(name, idx, config)
    return idx


def gpt_forward(params: dict, idx, config: GPTConfig, rng=None):
    """Next-token logits; dropout is on only when a jax PRNG key `rng` is given and config.dropout > 0.

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    return _jit_logits(params, _check_idx("idx", idx, config), config, rng)


def gpt_loss(params: dict, idx, targets, config: GPTConfig, rng=None):
    """Mean cross-entropy over positions whose target is not -100 (0 when there are none).

    Shapes: idx (B, T), targets (B, T) ints -> scalar
    """
    return _jit_loss(params, _check_idx("idx", idx, config), jnp.asarray(targets), config, rng)


def gpt_loss_and_grads(params: dict, idx, targets, config: GPTConfig, rng=None):
    """The loss and jax.grad of it for every parameter (jax.value_and_grad, jitted).

    Shapes: idx (B, T), targets (B, T) -> (scalar, grads with the keys and shapes of params)
    """
    return _jit_loss_and_grads(params, _check_idx("idx", idx, config), jnp.asarray(targets), config, rng)
