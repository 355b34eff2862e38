"""The tiny GPT in JAX: the same forward as a pure function of the weight dict, differentiated by
jax.value_and_grad and compiled by jax.jit (the config is a static argument, so each configuration
compiles once per input shape).

    x = wte[idx] (* sqrt(C)) (+ wpe[:T] | + sinusoidal[:T])
    n_layer times:  x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))     (RoPE on q, k or ALiBi on the scores)
    logits = ln_f(x) wte^T                                tied head

The course's attention experiments (GPTConfig.similarity, share_qkv, post_softmax_mask, qkv_mlp,
attention) are written from their definitions, as in torch_ref.gpt. Dropout takes a jax PRNG key.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.checks import InputError, check_ndim
from triptych.common.gpt_config import GPTConfig, qkv_sources
from jax_impl.masks import alibi_bias
from jax_impl.positional import rope_cos_sin, sinusoidal_encoding

__all__ = ["gpt_forward", "gpt_loss", "gpt_loss_and_grads"]


def _ln(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance, as torch's layer_norm
    return (x - mu) * jax.lax.rsqrt(var + eps) * w + b


def _gelu(x):  # tanh approximation (GPT-2's)
    return 0.5 * x * (1.0 + jnp.tanh(jnp.sqrt(2.0 / jnp.pi).astype(x.dtype) * (x + 0.044715 * x ** 3)))


def _linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def _dropout(x, p: float, key):
    if key is None or p == 0.0:
        return x, key
    key, sub = jax.random.split(key)
    keep = jax.random.bernoulli(sub, 1.0 - p, x.shape)
    return jnp.where(keep, x / (1.0 - p), 0.0).astype(x.dtype), key


def _rotate(x):
    """RoPE, rotate_half layout. Shapes: (B, H, T, D) -> same"""
    cos, sin = rope_cos_sin(np.arange(x.shape[-2]), x.shape[-1], dtype=x.dtype)
    d = x.shape[-1] // 2
    return x * cos + jnp.concatenate([-x[..., d:], x[..., :d]], axis=-1) * sin


def _attention(h, p, pre: str, config: GPTConfig, key):
    """Shapes: h (B, T, C) -> (B, T, C)"""
    src, out = qkv_sources(config), {}
    for n in dict.fromkeys(src.values()):
        if config.qkv_mlp:
            m = pre + f"mlp_{n}."
            out[n] = _linear(_gelu(_linear(h, p[m + "w_fc"], p[m + "b_fc"])), p[m + "w_proj"], p[m + "b_proj"])
        else:
            out[n] = _linear(h, p[pre + f"w_{n}"], p[pre + f"b_{n}"])
    q, k, v = out[src["q"]], out[src["k"]], out[src["v"]]
    if config.attention == "aft_simple":  # per channel: causal softmax over time of k, gated by sigmoid(q)
        e = jnp.exp(k - jax.lax.stop_gradient(k.max(axis=1, keepdims=True)))  # the max cancels
        y = jax.nn.sigmoid(q) * (jnp.cumsum(e * v, axis=1) / jnp.cumsum(e, axis=1))
        return _linear(y, p[pre + "w_o"], p[pre + "b_o"]), key
    B, T, C = h.shape
    H, D = config.n_head, C // config.n_head
    q, k, v = (t.reshape(B, T, H, D).transpose(0, 2, 1, 3) for t in (q, k, v))  # (B, H, T, D)
    if config.positions == "rope":
        q, k = _rotate(q), _rotate(k)
    scale = 1.0 / math.sqrt(D)  # a Python float is weakly typed: float32 inputs stay float32 (np.float64 would not)
    if config.similarity == "dot":
        scores = (q * scale) @ k.swapaxes(-1, -2)
    elif config.similarity == "neg_sq_dist":
        scores = -jnp.sum((q[..., :, None, :] - k[..., None, :, :]) ** 2, axis=-1) * scale
    else:  # cosine with a learned temperature per head (torch's F.normalize: norms floored at 1e-12)
        qn = q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
        kn = k / jnp.maximum(jnp.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
        scores = jnp.exp(p[pre + "log_temp"])[:, None, None] * (qn @ kn.swapaxes(-1, -2))
    if config.positions == "alibi":  # a constant (H, T, T) penalty on distance, after the scale
        scores = scores + alibi_bias(H, T, dtype=scores.dtype)
    causal = jnp.tril(jnp.ones((T, T), dtype=bool))
    if config.post_softmax_mask:  # the wrong way: the future takes part in the normaliser
        weights = jax.nn.softmax(scores, axis=-1) * causal
    else:
        weights = jax.nn.softmax(jnp.where(causal, scores, -jnp.inf), axis=-1)
    weights, key = _dropout(weights, config.dropout, key)
    y = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return _linear(y, p[pre + "w_o"], p[pre + "b_o"]), key


def _logits(params, idx, config: GPTConfig, key=None):
    p, (_, T), C = params, idx.shape, config.n_embd
    x = p["wte.weight"][idx]
    if config.scale_embeddings:
        x = x * math.sqrt(C)
    if config.positions == "learned":
        x = x + p["wpe.weight"][:T]
    elif config.positions == "sinusoidal":
        x = x + sinusoidal_encoding(T, C, dtype=x.dtype)
    x, key = _dropout(x, config.dropout, key)
    for i in range(config.n_layer):
        pre = f"h.{i}."
        a, key = _attention(_ln(x, p[pre + "ln_1.weight"], p[pre + "ln_1.bias"]), p, pre + "attn.", config, key)
        a, key = _dropout(a, config.dropout, key)
        x = x + a
        h = _gelu(_linear(_ln(x, p[pre + "ln_2.weight"], p[pre + "ln_2.bias"]), p[pre + "mlp.w_fc"], p[pre + "mlp.b_fc"]))
        m, key = _dropout(_linear(h, p[pre + "mlp.w_proj"], p[pre + "mlp.b_proj"]), config.dropout, key)
        x = x + m
    return _linear(_ln(x, p["ln_f.weight"], p["ln_f.bias"]), p["wte.weight"])


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
    check_ndim(name, idx, 2, "(B, T) token ids")
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise InputError(f"{name}: expected integer token ids, got dtype {idx.dtype}")
    if config.positions == "learned" and idx.shape[1] > config.block_size:
        raise InputError(f"{name}: expected at most block_size={config.block_size} positions with learned "
                         f"positions (the table has no rows beyond), got {idx.shape[1]}")
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
