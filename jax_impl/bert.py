"""A BERT encoder's forward pass in JAX; mirrors numpy_impl/bert.py name for name (read that for the
maths and the param keys). The whole encoder compiles as one jitted function per input shape
(n_heads and eps are static), built from jax_impl's own layers.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from triptych.common.checks import InputError, check_ndim, check_shape
from triptych.common.token_checks import check_id_grid
from jax_impl._checks import is_traced
from jax_impl.layers import embedding, layer_norm
from jax_impl.masks import padding_to_attention_mask
from jax_impl.multihead import calculate_multihead_attention, get_multihead_qkv, linear, merge_heads
from jax_impl.positional import learned_positional_encoding

__all__ = [
    "gelu_erf",
    "bert_embeddings",
    "bert_mlp",
    "bert_layer",
    "bert_layer_activations",
    "bert_encoder",
    "mean_pool",
    "l2_normalize",
    "sentence_embedding",
]

BERT_EPS = 1e-12


def gelu_erf(x):
    """The exact GELU x/2 (1 + erf(x / sqrt 2)), torch's formula. Shapes: any -> same"""
    # Not jax.nn.gelu(approximate=False): it goes through erfc, whose XLA:CPU expansion (exp and
    # branches) made the forward and its jax.grad several times slower than erf here.
    return x * 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def bert_embeddings(input_ids, params: dict, token_type_ids=None, eps: float = BERT_EPS):
    """Shapes: input_ids (B, T) ints, token_type_ids (B, T) ints or None -> (B, T, C)"""
    check_id_grid("input_ids", input_ids)
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    check_id_grid("token_type_ids", token_type_ids, input_ids)
    x = embedding(input_ids, params["embed.word"])
    x = learned_positional_encoding(x, params["embed.position"])
    x = x + embedding(token_type_ids, params["embed.token_type"])
    return layer_norm(x, params["embed.ln.weight"], params["embed.ln.bias"], eps)


def bert_mlp(x, params: dict):
    """Shapes: x (..., C) -> (..., C)"""
    return linear(gelu_erf(linear(x, params["w_fc"], params["b_fc"])), params["w_proj"], params["b_proj"])


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


class BertLayerCache(NamedTuple):
    """One encoder layer's activations in forward order (the names trace_bert.BERT_STEPS reports)."""
    x: Any  # (B, T, C) the layer's input
    q: Any  # (B, H, T, D) x W_q^T + b_q in heads
    k: Any  # (B, H, T, D)
    v: Any  # (B, H, T, D)
    weights: Any  # (B, H, T, T) softmax probabilities (padding keys 0)
    context: Any  # (B, T, C) merged heads, the output projection's input
    attn_out: Any  # (B, T, C) context W_o^T + b_o
    attn_resid: Any  # (B, T, C) x + attn_out
    attn_ln: Any  # (B, T, C) LN(attn_resid)
    fc: Any  # (B, T, d_ff) attn_ln W_fc^T + b_fc
    gelu: Any  # (B, T, d_ff) gelu_erf(fc)
    mlp_out: Any  # (B, T, C) gelu W_proj^T + b_proj (bert_mlp's output)
    mlp_resid: Any  # (B, T, C) attn_ln + mlp_out
    mlp_ln: Any  # (B, T, C) LN(mlp_resid): the layer's output


def bert_layer_activations(x, params: dict, n_heads: int, mask=None, eps: float = BERT_EPS):
    """One post-LN encoder layer, every activation kept: the ONE wiring of the layer, run by
    bert_encoder (through bert_layer) and by triptych/pretrained/trace_bert.py. multihead_attention
    is written out as its steps (get_multihead_qkv, calculate_multihead_attention, merge_heads,
    linear), bert_mlp as linear, gelu_erf, linear, so their intermediates have names.

    Shapes: x (B, T, C), mask bool broadcastable to (B, H, T, T) (True = may attend)
            -> out (B, T, C), BertLayerCache
    """
    attn, mlp = _sub(params, "attn."), _sub(params, "mlp.")
    q, k, v = get_multihead_qkv(x, attn, n_heads)  # (B, H, T, D) each
    heads, weights = calculate_multihead_attention(q, k, v, mask)
    context = merge_heads(heads)  # (B, T, C)
    attn_out = linear(context, attn["w_o"], attn["b_o"])
    attn_resid = x + attn_out
    attn_ln = layer_norm(attn_resid, params["attn_ln.weight"], params["attn_ln.bias"], eps)  # HF BertSelfOutput
    fc = linear(attn_ln, mlp["w_fc"], mlp["b_fc"])
    gelu = gelu_erf(fc)
    mlp_out = linear(gelu, mlp["w_proj"], mlp["b_proj"])
    mlp_resid = attn_ln + mlp_out
    mlp_ln = layer_norm(mlp_resid, params["mlp_ln.weight"], params["mlp_ln.bias"], eps)
    return mlp_ln, BertLayerCache(x, q, k, v, weights, context, attn_out, attn_resid, attn_ln, fc, gelu, mlp_out,
                                  mlp_resid, mlp_ln)


def bert_layer(x, params: dict, n_heads: int, mask=None, eps: float = BERT_EPS):
    """One post-LN encoder layer. Shapes: x (B, T, C), mask bool broadcastable to (B, H, T, T) -> (B, T, C)"""
    return bert_layer_activations(x, params, n_heads, mask, eps)[0]


def _n_layers(params: dict) -> int:
    return len({k.split(".")[1] for k in params if k.startswith("layers.")})


@partial(jax.jit, static_argnames=("n_heads", "eps"))
def _encoder(input_ids, token_type_ids, valid, params, n_heads, eps):
    mask = None if valid is None else padding_to_attention_mask(valid)  # (B, 1, 1, T): keys only
    hidden = [bert_embeddings(input_ids, params, token_type_ids, eps)]
    for i in range(_n_layers(params)):  # unrolled at trace time: 6 layers, one compiled program
        hidden.append(bert_layer(hidden[-1], _sub(params, f"layers.{i}."), n_heads, mask, eps))
    return hidden


def _valid_keys(attention_mask, input_ids):
    if attention_mask is None:
        return None
    check_id_grid("attention_mask", attention_mask, input_ids)
    valid = jnp.asarray(attention_mask)
    if valid.dtype != jnp.bool_:
        if not is_traced(valid) and not bool(jnp.isin(valid, jnp.array([0, 1])).all()):
            raise InputError("attention_mask: expected 1 (token) or 0 (padding) everywhere")
        valid = valid == 1
    return valid


def bert_encoder(input_ids, params: dict, n_heads: int, attention_mask=None, token_type_ids=None,
                 eps: float = BERT_EPS) -> list:
    """Every hidden state, index 0 the embeddings. Shapes: input_ids (B, T) -> n_layers + 1 arrays (B, T, C)"""
    check_id_grid("input_ids", input_ids)
    valid = _valid_keys(attention_mask, input_ids)
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    # Token-id range: checked here, eagerly, since inside jit the embedding cannot read values.
    embedding(input_ids, params["embed.word"])
    embedding(token_type_ids, params["embed.token_type"])
    return list(_encoder(input_ids, token_type_ids, valid, params, n_heads, float(eps)))


def mean_pool(hidden, attention_mask=None):
    """Shapes: hidden (B, T, C), attention_mask (B, T) 1/0 or None -> (B, C)"""
    check_ndim("hidden", hidden, 3, "(B, T, C)")
    if attention_mask is None:
        return hidden.mean(axis=1)
    check_shape("attention_mask", attention_mask, hidden.shape[:2])
    w = jnp.asarray(attention_mask).astype(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1e-9)


def l2_normalize(x, eps: float = 1e-12):
    """Shapes: (..., C) -> (..., C)"""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def sentence_embedding(input_ids, params: dict, n_heads: int, attention_mask=None, token_type_ids=None,
                       eps: float = BERT_EPS):
    """Shapes: input_ids (B, T) ints, attention_mask (B, T) 1/0 or None -> (B, C), unit rows"""
    last = bert_encoder(input_ids, params, n_heads, attention_mask, token_type_ids, eps)[-1]
    return l2_normalize(mean_pool(last, attention_mask))
