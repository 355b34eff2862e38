"""Fine-tuning a BERT encoder for classification in JAX: numpy_impl/bert_finetune.py's forward (the
methods, heads and keys of triptych/common/bert_finetune.py) with jax.grad in place of the hand-written
backward. LoRA runs the layer on W + (alpha / r) B A, as the NumPy twin does; dropout is off.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.bert_finetune import adapter_targets, check_finetune
from triptych.common.token_checks import check_id_grid
from jax_impl.bert import BERT_EPS, _n_layers, _sub, _valid_keys, bert_layer
from jax_impl.layers import embedding, layer_norm
from jax_impl.lora import merge_adapters
from jax_impl.losses import cross_entropy
from jax_impl.masks import padding_to_attention_mask
from jax_impl.multihead import linear

__all__ = ["bert_finetune_logits", "bert_finetune_loss", "bert_finetune_loss_and_grads"]


def _effective(params: dict, trainable: dict, alpha: float) -> dict:
    return merge_adapters({**params, **trainable}, trainable, alpha)[0]


def _encode(method, p, ids, valid, types, n_heads, eps):
    """The encoder's last hidden state; prefix rows in front for method prefix. -> (B, T', C)"""
    x = p["embed.word"][ids]
    if method == "prefix":
        B, L = ids.shape[0], p["prefix"].shape[0]
        x = jnp.concatenate([jnp.broadcast_to(p["prefix"], (B,) + p["prefix"].shape), x], axis=1)
        types = jnp.concatenate([jnp.zeros((B, L), types.dtype), types], axis=1)
        valid = jnp.concatenate([jnp.ones((B, L), bool), valid], axis=1)
    x = x + p["embed.position"][: x.shape[1]] + p["embed.token_type"][types]
    x = layer_norm(x, p["embed.ln.weight"], p["embed.ln.bias"], eps)
    mask = padding_to_attention_mask(valid)  # (B, 1, 1, T')
    for i in range(_n_layers(p)):  # unrolled at trace time
        x = bert_layer(x, _sub(p, f"layers.{i}."), n_heads, mask, eps)
    return x


def _logits(trainable, params, ids, valid, types, method, n_heads, eps, alpha):
    p = _effective(params, trainable, alpha)
    last = _encode(method, p, ids, valid, types, n_heads, eps)
    if method in ("full", "lora"):
        pooled = jnp.tanh(linear(last[:, 0], p["pooler.w"], p["pooler.b"]))  # BertPooler on [CLS]
    else:
        m = valid.astype(last.dtype)[..., None]
        text = last[:, last.shape[1] - valid.shape[1]:]
        pooled = (text * m).sum(axis=1) / jnp.maximum(m.sum(axis=1), 1.0)  # models.masked_mean's clamp
    return linear(pooled, p["classifier.w"], p["classifier.b"])


def _loss(trainable, params, ids, valid, types, labels, method, n_heads, eps, alpha):
    return cross_entropy(_logits(trainable, params, ids, valid, types, method, n_heads, eps, alpha), labels)


def _loss_with_logits(trainable, params, ids, valid, types, labels, method, n_heads, eps, alpha):
    """(loss, logits): the logits ride along as jax.value_and_grad's aux output, from the same forward."""
    logits = _logits(trainable, params, ids, valid, types, method, n_heads, eps, alpha)
    return cross_entropy(logits, labels), logits


_STATIC = ("method", "n_heads", "eps", "alpha")
_jit_logits = jax.jit(_logits, static_argnames=_STATIC)
_jit_loss = jax.jit(_loss, static_argnames=_STATIC)
_jit_loss_and_grads = jax.jit(jax.value_and_grad(_loss), static_argnames=_STATIC)
_jit_loss_grads_logits = jax.jit(jax.value_and_grad(_loss_with_logits, has_aux=True), static_argnames=_STATIC)


def _checked(method, params, trainable, input_ids, attention_mask, token_type_ids):
    check_finetune(method, params, trainable)
    adapter_targets(trainable)
    check_id_grid("input_ids", input_ids)
    ids = jnp.asarray(input_ids)
    valid = jnp.ones(ids.shape, bool) if attention_mask is None else _valid_keys(attention_mask, ids)
    types = jnp.zeros_like(ids) if token_type_ids is None else jnp.asarray(token_type_ids)
    # Token-id ranges checked eagerly: inside jit an index out of range would be clamped silently.
    embedding(ids, params.get("embed.word", trainable.get("embed.word")))
    embedding(types, params.get("embed.token_type", trainable.get("embed.token_type")))
    return ids, valid, types


def _kw(method, n_heads, eps, alpha):
    return {"method": method, "n_heads": int(n_heads), "eps": float(eps), "alpha": float(alpha)}


def bert_finetune_logits(method: str, params: dict, trainable: dict, input_ids, attention_mask=None,
                         token_type_ids=None, n_heads: int = 12, eps: float = BERT_EPS, lora_alpha: float = 16.0):
    """Shapes: input_ids, attention_mask, token_type_ids (B, T) -> (B, n_classes)"""
    ids, valid, types = _checked(method, params, trainable, input_ids, attention_mask, token_type_ids)
    return _jit_logits(trainable, params, ids, valid, types, **_kw(method, n_heads, eps, lora_alpha))


def bert_finetune_loss(method: str, params: dict, trainable: dict, input_ids, attention_mask, token_type_ids,
                       labels, n_heads: int = 12, eps: float = BERT_EPS, lora_alpha: float = 16.0):
    """Mean cross-entropy. Shapes: (B, T) ids, labels (B,) -> scalar"""
    ids, valid, types = _checked(method, params, trainable, input_ids, attention_mask, token_type_ids)
    return _jit_loss(trainable, params, ids, valid, types, jnp.asarray(np.asarray(labels)),
                     **_kw(method, n_heads, eps, lora_alpha))


def bert_finetune_loss_and_grads(method: str, params: dict, trainable: dict, input_ids, attention_mask,
                                 token_type_ids, labels, n_heads: int = 12, eps: float = BERT_EPS,
                                 lora_alpha: float = 16.0, with_logits: bool = False):
    """The loss and jax.grad of it for every key of trainable (params are constants); with_logits also
    returns the forward's logits.

    Shapes: (B, T) ids, labels (B,) -> (scalar, {key: array shaped as trainable[key]}[, (B, n_classes)])
    """
    ids, valid, types = _checked(method, params, trainable, input_ids, attention_mask, token_type_ids)
    args = (trainable, params, ids, valid, types, jnp.asarray(np.asarray(labels)))
    if with_logits:
        (loss, logits), grads = _jit_loss_grads_logits(*args, **_kw(method, n_heads, eps, lora_alpha))
        return loss, grads, logits
    return _jit_loss_and_grads(*args, **_kw(method, n_heads, eps, lora_alpha))
