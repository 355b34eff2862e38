"""A BERT encoder's forward pass (all-MiniLM-L6-v2: 6 layers, C = 384, 12 heads) in plain NumPy,
assembled from the project's layers: embedding, layer_norm, learned positions, multi-head attention.

    x = LN(word[ids] + position[:T] + token_type[tt])                 bert_embeddings
    n_layers times, post-LN (the norm comes AFTER each residual sum, where GPT-2 normalises before):
        x = LN_attn(x + MHA(x, padding mask))                          bert_layer
        x = LN_mlp(x + W_proj gelu_erf(W_fc x + b_fc) + b_proj)         (bert_mlp)
    sentence = l2_normalize(mean of x over the real tokens)            sentence_embedding

Params are one flat dict, the same keys in the three backends (pretrained.minilm converts Hugging
Face's BertModel state_dict):
    embed.word (V, C), embed.position (P, C), embed.token_type (n_types, C), embed.ln.{weight,bias} (C,)
    layers.{i}.attn.{w_q,b_q,w_k,b_k,w_v,b_v,w_o,b_o}  multihead.multihead_attention's keys, (C, C) / (C,)
    layers.{i}.attn_ln.{weight,bias}                   (C,)
    layers.{i}.mlp.{w_fc,b_fc,w_proj,b_proj}           (d_ff, C), (d_ff,), (C, d_ff), (C,)
    layers.{i}.mlp_ln.{weight,bias}                    (C,)
attention_mask is Hugging Face's (B, T) of 1 = real token, 0 = padding; padding keys are masked
for every query (the padded queries still get outputs, which pooling then ignores).
Forward only; numpy_impl/bert_finetune.py walks these layers backward (classification fine-tuning).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
# NumPy has no erf; SciPy's is vectorised C, accurate to double precision (pinned in requirements.txt).
from scipy.special import erf as _erf

from triptych.common.checks import InputError, check_ndim, check_shape
from triptych.common.token_checks import check_id_grid
from numpy_impl.layers import embedding, layer_norm
from numpy_impl.masks import padding_to_attention_mask
from numpy_impl.multihead import calculate_multihead_attention, get_multihead_qkv, linear, merge_heads
from numpy_impl.positional import learned_positional_encoding

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

# BERT's LayerNorm epsilon (HF BertConfig.layer_norm_eps); far below GPT-2's 1e-5.
BERT_EPS = 1e-12



def gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU, x * Phi(x) = x/2 (1 + erf(x / sqrt 2)): BERT's "gelu" (torch F.gelu's default).
    layers.gelu is GPT-2's tanh approximation, up to ~5e-4 away, too far for parity with BERT.

    Shapes: any -> same
    """
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(x.dtype, copy=False)


def bert_embeddings(input_ids: np.ndarray, params: dict, token_type_ids: np.ndarray | None = None,
                    eps: float = BERT_EPS) -> np.ndarray:
    """Word + learned position + token-type embeddings, then LayerNorm (dropout is off in eval).

    Shapes: input_ids (B, T) ints, token_type_ids (B, T) ints or None (all type 0) -> (B, T, C)
    """
    check_id_grid("input_ids", input_ids)
    if token_type_ids is None:
        token_type_ids = np.zeros_like(input_ids)
    check_id_grid("token_type_ids", token_type_ids, input_ids)
    x = embedding(input_ids, params["embed.word"])  # (B, T, C)
    x = learned_positional_encoding(x, params["embed.position"])  # + position[:T]
    x = x + embedding(token_type_ids, params["embed.token_type"])
    return layer_norm(x, params["embed.ln.weight"], params["embed.ln.bias"], eps)


def bert_mlp(x: np.ndarray, params: dict) -> np.ndarray:
    """Feed-forward with the exact GELU; params w_fc (d_ff, C), b_fc, w_proj (C, d_ff), b_proj.

    Shapes: x (..., C) -> (..., C)
    """
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


def bert_layer(x: np.ndarray, params: dict, n_heads: int, mask: np.ndarray | None = None,
               eps: float = BERT_EPS) -> np.ndarray:
    """One post-LN encoder layer; params are one layer's keys (attn.*, attn_ln.*, mlp.*, mlp_ln.*).

    Shapes: x (B, T, C), mask bool broadcastable to (B, H, T, T) (True = may attend) -> (B, T, C)
    """
    return bert_layer_activations(x, params, n_heads, mask, eps)[0]


def _n_layers(params: dict) -> int:
    return len({k.split(".")[1] for k in params if k.startswith("layers.")})


def _valid_keys(attention_mask, input_ids) -> np.ndarray | None:
    """HF's (B, T) 1/0 attention_mask -> bool (B, T), True = a real token."""
    if attention_mask is None:
        return None
    check_id_grid("attention_mask", attention_mask, input_ids)
    valid = np.asarray(attention_mask)
    if valid.dtype != bool:
        if not np.isin(valid, (0, 1)).all():
            raise InputError("attention_mask: expected 1 (token) or 0 (padding) everywhere")
        valid = valid == 1
    return valid


def bert_encoder(input_ids: np.ndarray, params: dict, n_heads: int, attention_mask: np.ndarray | None = None,
                 token_type_ids: np.ndarray | None = None, eps: float = BERT_EPS) -> list[np.ndarray]:
    """The whole encoder. Returns every hidden state, as HF's output_hidden_states: index 0 is the
    embeddings' output, index i the output of layer i, the last one BertModel's last_hidden_state.

    Shapes: input_ids (B, T) ints, attention_mask (B, T) 1/0 or None -> n_layers + 1 arrays (B, T, C)
    """
    valid = _valid_keys(attention_mask, input_ids)
    mask = None if valid is None else padding_to_attention_mask(valid)  # (B, 1, 1, T): keys only
    hidden = [bert_embeddings(input_ids, params, token_type_ids, eps)]
    for i in range(_n_layers(params)):
        hidden.append(bert_layer(hidden[-1], _sub(params, f"layers.{i}."), n_heads, mask, eps))
    return hidden


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
    """Average of the real tokens' vectors (sentence-transformers' mean pooling; the count is clamped
    to 1e-9 as there, so an all-padding row gives zeros, not NaN).

    Shapes: hidden (B, T, C), attention_mask (B, T) 1/0 or None -> (B, C)
    """
    check_ndim("hidden", hidden, 3, "(B, T, C)")
    if attention_mask is None:
        return hidden.mean(axis=1)
    check_shape("attention_mask", attention_mask, hidden.shape[:2])
    w = np.asarray(attention_mask).astype(hidden.dtype)[..., None]  # (B, T, 1)
    return (hidden * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """x / max(||x||_2, eps) along the last axis (torch F.normalize), so cosine similarity is a dot product.

    Shapes: (..., C) -> (..., C)
    """
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def sentence_embedding(input_ids: np.ndarray, params: dict, n_heads: int, attention_mask: np.ndarray | None = None,
                       token_type_ids: np.ndarray | None = None, eps: float = BERT_EPS) -> np.ndarray:
    """all-MiniLM-L6-v2's sentence vector: mean-pooled last hidden state, L2-normalised.

    Shapes: input_ids (B, T) ints, attention_mask (B, T) 1/0 or None -> (B, C), unit rows
    """
    last = bert_encoder(input_ids, params, n_heads, attention_mask, token_type_ids, eps)[-1]
    return l2_normalize(mean_pool(last, attention_mask))
