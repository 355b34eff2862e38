"""Fine-tuning a BERT encoder (all-MiniLM-L6-v2) for classification in plain NumPy, with a hand-written
backward: the four methods of torch_ref/finetune/models.py (full, lora, head, prefix; their heads and
keys are written out in triptych/common/bert_finetune.py), cross-entropy over the classes, and the
gradient of every trainable parameter.

The forward runs numpy_impl/bert.py's one wiring of a layer (bert_layer_activations), so the backward
walks each layer's BertLayerCache in reverse:

    out = LN2(r2),  r2 = a + W_proj gelu(W_fc a + b_fc) + b_proj,  a = LN1(r1),  r1 = x + W_o ctx + b_o
    ctx = merge(softmax(q k^T / sqrt(D), padding keys masked) v),  q, k, v = split(x W^T + b)

LoRA is a reparametrisation of the weight a layer uses, W_eff = W + s B A (s = alpha / r; dropout off),
so the forward runs on W_eff and the chain rule through the product turns the layer's G = dL/dW_eff
into dL/dB = s G A^T and dL/dA = s B^T G (numpy_impl/llama_lora.py does the same for the decoder).
Frozen weights get no gradient: their dW products are skipped, and `head` never enters the encoder's
backward at all, so its forward keeps no layer's activations (one layer's at a time, as inference).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import erf as _erf

from triptych.common.bert_finetune import adapter_targets, check_finetune
from triptych.common.token_checks import check_id_grid
from numpy_impl.bert import BERT_EPS, _n_layers, _sub, _valid_keys, bert_layer, bert_layer_activations
from numpy_impl.layers import embedding_backward, layer_norm_backward, layer_norm_forward
from numpy_impl.lora import merge_adapters
from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward
from numpy_impl.masks import padding_to_attention_mask
from numpy_impl.multihead import calculate_multihead_attention_backward, linear, linear_backward, \
    merge_heads_backward, split_heads_backward

__all__ = ["gelu_erf_backward", "bert_layer_backward", "bert_finetune_logits", "bert_finetune_loss",
           "bert_finetune_loss_and_grads"]
# NumPy only: the hand-written backward's own pieces.
__backend_only__ = ["gelu_erf_backward", "bert_layer_backward"]

_PROJ = (("attn.w_q", "attn.b_q"), ("attn.w_k", "attn.b_k"), ("attn.w_v", "attn.b_v"))


def gelu_erf_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y = x Phi(x), so dy/dx = Phi(x) + x phi(x) (phi the standard normal density).

    Shapes: dout, x (any, same) -> dx (same)
    """
    phi = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return (dout * (0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * phi)).astype(x.dtype, copy=False)


def _linear_back(dy, x, p: dict, w: str, b: str, grads: dict, need: bool):
    """y = x W^T + b: dx always; dW, db into grads only when the weight is wanted (trained or adapted)."""
    if not need:  # one 2-D matmul over the folded batch and time axes (as multihead.linear_backward)
        return (dy.reshape(-1, dy.shape[-1]) @ p[w]).reshape(*dy.shape[:-1], p[w].shape[1])
    dx, grads[w], grads[b] = linear_backward(dy, x, p[w])
    return dx


def _ln_back(dout, x, weight, bias, eps, grads: dict, prefix: str, need: bool):
    """LayerNorm backward from its input (the forward's statistics are recomputed: cheaper to keep)."""
    dx, dw, db = layer_norm_backward(dout, layer_norm_forward(x, weight, bias, eps)[1])
    if need:
        grads[prefix + ".weight"], grads[prefix + ".bias"] = dw, db
    return dx


def bert_layer_backward(dout: np.ndarray, cache, params: dict, n_heads: int, eps: float = BERT_EPS,
                        need=None):
    """One post-LN layer backward from bert_layer_activations' cache. params are the layer's keys (as
    bert_layer takes them); need(key) says which weights want a gradient (None: all of them).

    Shapes: dout (B, T, C) -> dx (B, T, C), grads {local key: array} for the wanted weights
    """
    want = (lambda key: True) if need is None else need
    c, p, g = cache, params, {}
    dr2 = _ln_back(dout, c.mlp_resid, p["mlp_ln.weight"], p["mlp_ln.bias"], eps, g, "mlp_ln", want("mlp_ln.weight"))
    dgelu = _linear_back(dr2, c.gelu, p, "mlp.w_proj", "mlp.b_proj", g, want("mlp.w_proj"))
    dfc = gelu_erf_backward(dgelu, c.fc)
    da = dr2 + _linear_back(dfc, c.attn_ln, p, "mlp.w_fc", "mlp.b_fc", g, want("mlp.w_fc"))  # r2 = a + mlp(a)
    dr1 = _ln_back(da, c.attn_resid, p["attn_ln.weight"], p["attn_ln.bias"], eps, g, "attn_ln", want("attn_ln.weight"))
    dctx = _linear_back(dr1, c.context, p, "attn.w_o", "attn.b_o", g, want("attn.w_o"))
    dq, dk, dv = calculate_multihead_attention_backward(merge_heads_backward(dctx, n_heads), c.q, c.k, c.v, c.weights)
    dx = dr1  # r1 = x + attention(x)
    for (w, b), d in zip(_PROJ, (dq, dk, dv)):
        dx = dx + _linear_back(split_heads_backward(d), c.x, p, w, b, g, want(w))
    return dx, g


def _effective(params: dict, trainable: dict, lora_alpha: float) -> tuple[dict, dict]:
    """(every weight the forward uses, adapted ones as W + s B A; {adapted weight key: s})."""
    adapter_targets(trainable)  # every adapter a whole A, B pair on a weight LoRA may adapt
    return merge_adapters({**params, **trainable}, trainable, lora_alpha)


def _embed(p: dict, ids, types, prefix):
    """word[ids] (prefix rows in front) + position[:T'] + token_type[types]; the LayerNorm's input."""
    x = p["embed.word"][ids]  # (B, T, C)
    if prefix is not None:
        x = np.concatenate([np.broadcast_to(prefix, (ids.shape[0],) + prefix.shape), x], axis=1)
        types = np.concatenate([np.zeros((ids.shape[0], prefix.shape[0]), types.dtype), types], axis=1)
    return x + p["embed.position"][: x.shape[1]] + p["embed.token_type"][types], types


def _forward(method, p, ids, valid, types, n_heads, eps, keep: bool = True):
    """The encoder's forward; keep: every layer's activations for the backward, else one layer's at a
    time (as inference). Shapes: ids (B, T) -> last (B, T', C), (emb_sum, types, caches)"""
    prefix = p["prefix"] if method == "prefix" else None
    if prefix is not None:
        valid = np.concatenate([np.ones((ids.shape[0], prefix.shape[0]), bool), valid], axis=1)
    emb_sum, types = _embed(p, ids, types, prefix)
    x = layer_norm_forward(emb_sum, p["embed.ln.weight"], p["embed.ln.bias"], eps)[0]
    mask = padding_to_attention_mask(valid)  # (B, 1, 1, T'): padding keys masked for every query
    caches = []
    for i in range(_n_layers(p)):
        layer = _sub(p, f"layers.{i}.")
        if not keep:
            x = bert_layer(x, layer, n_heads, mask, eps)
        else:
            x, cache = bert_layer_activations(x, layer, n_heads, mask, eps)
            caches.append(cache)
    return x, (emb_sum, types, caches)


def _head(method, p, last, valid):
    """logits (B, n) and what the head's backward needs."""
    if method in ("full", "lora"):
        pooled = np.tanh(linear(last[:, 0], p["pooler.w"], p["pooler.b"]))  # (B, C): BertPooler on [CLS]
    else:
        text = last[:, last.shape[1] - valid.shape[1]:]  # prefix: the text positions only
        m = valid.astype(last.dtype)[..., None]  # (B, T, 1)
        pooled = (text * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)  # models.masked_mean's clamp
    return linear(pooled, p["classifier.w"], p["classifier.b"]), pooled


def _head_backward(method, p, dlogits, pooled, last, valid, grads: dict):
    """grads of the head's trainable keys; returns dL/d last (B, T', C) (None for head: frozen below)."""
    dpooled, grads["classifier.w"], grads["classifier.b"] = linear_backward(dlogits, pooled, p["classifier.w"])
    dlast = np.zeros_like(last)
    if method in ("full", "lora"):
        dz = dpooled * (1.0 - pooled * pooled)  # tanh' = 1 - tanh^2
        if method == "full":
            dlast[:, 0], grads["pooler.w"], grads["pooler.b"] = linear_backward(dz, last[:, 0], p["pooler.w"])
        else:
            dlast[:, 0] = dz @ p["pooler.w"]
        return dlast
    if method == "head":
        return None
    m = valid.astype(last.dtype)[..., None]
    dlast[:, last.shape[1] - valid.shape[1]:] = dpooled[:, None, :] * m / np.maximum(m.sum(axis=1), 1.0)[:, None]
    return dlast


def _checked(method, params, trainable, input_ids, attention_mask, token_type_ids):
    check_finetune(method, params, trainable)
    check_id_grid("input_ids", input_ids)
    ids = np.asarray(input_ids)
    valid = np.ones(ids.shape, bool) if attention_mask is None else _valid_keys(attention_mask, ids)
    types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
    check_id_grid("token_type_ids", types, ids)
    return ids, valid, types


def bert_finetune_logits(method: str, params: dict, trainable: dict, input_ids, attention_mask=None,
                         token_type_ids=None, n_heads: int = 12, eps: float = BERT_EPS,
                         lora_alpha: float = 16.0) -> np.ndarray:
    """The classifier's logits (dropout off). params: the frozen weights; trainable: the method's.

    Shapes: input_ids, attention_mask, token_type_ids (B, T) -> (B, n_classes)
    """
    ids, valid, types = _checked(method, params, trainable, input_ids, attention_mask, token_type_ids)
    p, _ = _effective(params, trainable, lora_alpha)
    last, _ = _forward(method, p, ids, valid, types, n_heads, eps, keep=False)
    return _head(method, p, last, valid)[0]


def bert_finetune_loss(method: str, params: dict, trainable: dict, input_ids, attention_mask, token_type_ids,
                       labels, n_heads: int = 12, eps: float = BERT_EPS, lora_alpha: float = 16.0) -> float:
    """Mean cross-entropy of the logits against labels. Shapes: (B, T) ids, labels (B,) -> float"""
    logits = bert_finetune_logits(method, params, trainable, input_ids, attention_mask, token_type_ids, n_heads,
                                  eps, lora_alpha)
    return float(cross_entropy_forward(logits, np.asarray(labels))[0])


def _encoder_backward(method, p, scale, dlast, caches, n_heads, eps, grads):
    """Layers in reverse; returns dL/d(embedding LayerNorm output)."""
    full = method == "full"
    dx = dlast
    for i in reversed(range(len(caches))):
        pre = f"layers.{i}."

        def need(key, pre=pre):
            return full or (pre + key) in scale

        dx, g = bert_layer_backward(dx, caches[i], _sub(p, pre), n_heads, eps, need)
        for k, gk in g.items():
            w_key = pre + k
            if full:
                grads[w_key] = gk
            elif w_key in scale:  # chain rule through W_eff = W + s B A
                a, b = p[w_key + ".lora_A"], p[w_key + ".lora_B"]
                s = np.asarray(scale[w_key], dtype=gk.dtype)
                grads[w_key + ".lora_A"], grads[w_key + ".lora_B"] = s * (b.T @ gk), s * (gk @ a.T)
    return dx


def _embeddings_backward(method, p, dx, emb_sum, types, ids, eps, grads):
    full = method == "full"
    dsum = _ln_back(dx, emb_sum, p["embed.ln.weight"], p["embed.ln.bias"], eps, grads, "embed.ln", full)
    if method == "prefix":
        L = p["prefix"].shape[0]
        grads["prefix"] = dsum[:, :L].sum(axis=0)  # the same (L, C) rows sit in front of every example
    if full:
        T = dsum.shape[1]
        grads["embed.word"] = embedding_backward(dsum, (ids, p["embed.word"].shape))
        grads["embed.position"] = np.zeros_like(p["embed.position"])
        grads["embed.position"][:T] = dsum.sum(axis=0)
        grads["embed.token_type"] = embedding_backward(dsum, (types, p["embed.token_type"].shape))


def bert_finetune_loss_and_grads(method: str, params: dict, trainable: dict, input_ids, attention_mask,
                                 token_type_ids, labels, n_heads: int = 12, eps: float = BERT_EPS,
                                 lora_alpha: float = 16.0, with_logits: bool = False) -> tuple:
    """The mean cross-entropy and its gradient for every key of `trainable`, by hand (module docstring);
    with_logits also returns the forward's logits (a training loop's accuracy at no extra cost).

    Shapes: input_ids, attention_mask, token_type_ids (B, T), labels (B,) ints
            -> (float, {key: array shaped as trainable[key]}[, logits (B, n_classes)])
    """
    ids, valid, types = _checked(method, params, trainable, input_ids, attention_mask, token_type_ids)
    p, scale = _effective(params, trainable, lora_alpha)
    # head: the gradient stops at the encoder's output, so no layer's activations are kept
    last, (emb_sum, types, caches) = _forward(method, p, ids, valid, types, n_heads, eps, keep=method != "head")
    logits, pooled = _head(method, p, last, valid)
    loss, ce = cross_entropy_forward(logits, np.asarray(labels))
    grads = {}
    dlast = _head_backward(method, p, cross_entropy_backward(1.0, ce), pooled, last, valid, grads)
    if dlast is not None:
        dx = _encoder_backward(method, p, scale, dlast, caches, n_heads, eps, grads)
        if method in ("full", "prefix"):
            _embeddings_backward(method, p, dx, emb_sum, types, ids, eps, grads)
    out = (float(loss), {k: grads[k] for k in trainable})
    return out + (logits,) if with_logits else out
