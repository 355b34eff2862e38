"""The referee for numpy_impl/bert.py (read that for the maths and the param keys): the same names,
computed by torch's own ops (F.layer_norm, F.gelu, F.multi_head_attention_forward, F.normalize) and,
for the whole encoder, by Hugging Face's BertModel built from our params.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from triptych.common.checks import InputError, check_ndim, check_shape
from triptych.common.token_checks import check_id_grid
from torch_ref.layers import embedding, layer_norm
from torch_ref.multihead import linear, multihead_attention
from torch_ref.positional import learned_positional_encoding

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


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """F.gelu's default, the exact erf form. Shapes: any -> same"""
    return F.gelu(x)


def bert_embeddings(input_ids, params: dict, token_type_ids=None, eps: float = BERT_EPS):
    """Shapes: input_ids (B, T) ints, token_type_ids (B, T) ints or None -> (B, T, C)"""
    check_id_grid("input_ids", input_ids)
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    check_id_grid("token_type_ids", token_type_ids, input_ids)
    x = learned_positional_encoding(embedding(input_ids, params["embed.word"]), params["embed.position"])
    x = x + embedding(token_type_ids, params["embed.token_type"])
    return layer_norm(x, params["embed.ln.weight"], params["embed.ln.bias"], eps)


def bert_mlp(x, params: dict):
    """Shapes: x (..., C) -> (..., C)"""
    return linear(gelu_erf(linear(x, params["w_fc"], params["b_fc"])), params["w_proj"], params["b_proj"])


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


class BertLayerCache(NamedTuple):
    """numpy_impl.bert.BertLayerCache's names. q, k, v and context are None: the attention is
    F.multi_head_attention_forward whole (the referee's point), which keeps them to itself."""
    x: Any  # (B, T, C)
    q: Any  # None
    k: Any  # None
    v: Any  # None
    weights: Any  # (B, H, T, T)
    context: Any  # None
    attn_out: Any  # (B, T, C)
    attn_resid: Any  # (B, T, C)
    attn_ln: Any  # (B, T, C)
    fc: Any  # (B, T, d_ff)
    gelu: Any  # (B, T, d_ff)
    mlp_out: Any  # (B, T, C)
    mlp_resid: Any  # (B, T, C)
    mlp_ln: Any  # (B, T, C) the layer's output


def bert_layer_activations(x, params: dict, n_heads: int, mask=None, eps: float = BERT_EPS):
    """One post-LN layer through F.multi_head_attention_forward, its activations kept.

    Shapes: x (B, T, C) -> out (B, T, C), BertLayerCache
    """
    attn_out, weights = multihead_attention(x, _sub(params, "attn."), n_heads, mask=mask)
    attn_resid = x + attn_out
    attn_ln = layer_norm(attn_resid, params["attn_ln.weight"], params["attn_ln.bias"], eps)
    mlp = _sub(params, "mlp.")
    fc = linear(attn_ln, mlp["w_fc"], mlp["b_fc"])
    gelu = gelu_erf(fc)
    mlp_out = linear(gelu, mlp["w_proj"], mlp["b_proj"])  # bert_mlp's steps
    mlp_resid = attn_ln + mlp_out
    mlp_ln = layer_norm(mlp_resid, params["mlp_ln.weight"], params["mlp_ln.bias"], eps)
    return mlp_ln, BertLayerCache(x, None, None, None, weights, None, attn_out, attn_resid, attn_ln, fc, gelu,
                                  mlp_out, mlp_resid, mlp_ln)


def bert_layer(x, params: dict, n_heads: int, mask=None, eps: float = BERT_EPS):
    """One post-LN layer through F.multi_head_attention_forward. Shapes: x (B, T, C) -> (B, T, C)"""
    return bert_layer_activations(x, params, n_heads, mask, eps)[0]


def _hf_bert(params: dict, n_heads: int, eps: float):
    """transformers.BertModel (no pooler, eval, eager attention) holding our params."""
    from transformers import BertConfig, BertModel

    from triptych.common.bert_params import params_to_hf

    word, pos, types = params["embed.word"], params["embed.position"], params["embed.token_type"]
    config = BertConfig(
        vocab_size=word.shape[0], hidden_size=word.shape[1], max_position_embeddings=pos.shape[0],
        type_vocab_size=types.shape[0], num_attention_heads=n_heads,
        num_hidden_layers=len({k.split(".")[1] for k in params if k.startswith("layers.")}),
        intermediate_size=params["layers.0.mlp.w_fc"].shape[0], layer_norm_eps=eps, hidden_act="gelu",
        attn_implementation="eager",
    )
    model = BertModel(config, add_pooling_layer=False).to(word.dtype).eval()
    model.load_state_dict(params_to_hf(params), strict=True)
    return model


def bert_encoder(input_ids, params: dict, n_heads: int, attention_mask=None, token_type_ids=None,
                 eps: float = BERT_EPS) -> list:
    """HF BertModel(output_hidden_states=True). Shapes: input_ids (B, T) -> n_layers + 1 tensors (B, T, C)"""
    check_id_grid("input_ids", input_ids)
    if attention_mask is not None:
        check_id_grid("attention_mask", attention_mask, input_ids)
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise InputError("attention_mask: expected 1 (token) or 0 (padding) everywhere")
        attention_mask = attention_mask.long()
    if token_type_ids is not None:
        check_id_grid("token_type_ids", token_type_ids, input_ids)
    with torch.no_grad():
        out = _hf_bert(params, n_heads, eps)(input_ids=input_ids, attention_mask=attention_mask,
                                             token_type_ids=token_type_ids, output_hidden_states=True)
    return list(out.hidden_states)


def mean_pool(hidden, attention_mask=None):
    """sentence-transformers' Pooling(mean). Shapes: hidden (B, T, C), attention_mask (B, T) -> (B, C)"""
    check_ndim("hidden", hidden, 3, "(B, T, C)")
    if attention_mask is None:
        return hidden.mean(dim=1)
    check_shape("attention_mask", attention_mask, hidden.shape[:2])
    w = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * w).sum(dim=1) / torch.clamp(w.sum(dim=1), min=1e-9)


def l2_normalize(x, eps: float = 1e-12):
    """F.normalize (sentence-transformers' Normalize). Shapes: (..., C) -> (..., C)"""
    return F.normalize(x, p=2.0, dim=-1, eps=eps)


def sentence_embedding(input_ids, params: dict, n_heads: int, attention_mask=None, token_type_ids=None,
                       eps: float = BERT_EPS):
    """Shapes: input_ids (B, T) ints, attention_mask (B, T) 1/0 or None -> (B, C), unit rows"""
    last = bert_encoder(input_ids, params, n_heads, attention_mask, token_type_ids, eps)[-1]
    return l2_normalize(mean_pool(last, attention_mask))
