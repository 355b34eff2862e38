"""The course's attention experiments in PyTorch (docs/course.md, section I), the referee for
numpy_impl.gpt_variants and jax_impl.gpt_variants: the same functions, written here independently of
numpy_impl, straight from their definitions, and differentiated by autograd. They plug into the
straight GPT of torch_ref.gpt; GPTConfig's fields name the variant (triptych/common/gpt_config.py)
and block_attention(config) is None when the config names none. Dot-product attention (with RoPE
or ALiBi) goes through torch's fused kernel; the other similarities build the (T, T) scores.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.gpt_config import GPTConfig, qkv_sources, straight_attention
from torch_ref._gpt_ops import dropout
from torch_ref.masks import alibi_bias
from torch_ref.positional import rope_cos_sin, sinusoidal_encoding

__all__ = ["neg_sq_distance", "cosine_similarity", "aft_simple", "project_qkv", "attention", "add_positions",
           "block_attention"]


@lru_cache(maxsize=32)
def _sinusoidal(T: int, C: int, dtype: torch.dtype) -> torch.Tensor:
    return sinusoidal_encoding(T, C, dtype=dtype)


@lru_cache(maxsize=32)
def _rope(T: int, D: int, dtype: torch.dtype):
    return rope_cos_sin(np.arange(T), D, dtype=dtype)


@lru_cache(maxsize=32)
def _alibi(H: int, T: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ALiBi's (H, T, T) score bias, and the same with -inf above the diagonal: SDPA takes a float
    attn_mask OR is_causal, so the causal mask travels inside the bias."""
    bias = alibi_bias(H, T, dtype=dtype)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return bias, bias.masked_fill(~causal, float("-inf"))


def _rotate(x: torch.Tensor) -> torch.Tensor:
    """RoPE, Llama's rotate_half layout (channel i pairs with i + D/2). Shapes: (B, H, T, D) -> same"""
    cos, sin = _rope(x.shape[-2], x.shape[-1], x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def neg_sq_distance(q, k, scale: float):
    """-|q_t - k_s|^2 * scale by torch's own pairwise-distance kernel: exact differences (not the
    2 q.k - |q|^2 - |k|^2 identity NumPy uses, so the two check each other) and no (..., T, T, D)
    temporary; 14x faster than broadcasting at the experiment's size.
    Shapes: q (..., T_q, D), k (..., T_k, D) -> (..., T_q, T_k)"""
    return -torch.cdist(q, k, compute_mode="donot_use_mm_for_euclid_dist").pow(2) * scale


def cosine_similarity(q, k, temperature):
    """temperature * cos(q, k) through F.normalize.
    Shapes: q (..., T_q, D), k (..., T_k, D), temperature broadcastable to (..., 1, 1) -> (..., T_q, T_k)"""
    return temperature * (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2))


def aft_simple(q, k, v):
    """Causal AFT-simple: y_t = sigmoid(q_t) * sum_{s<=t} exp(k_s) v_s / sum_{s<=t} exp(k_s), per channel.
    Shapes: q, k, v (B, T, C) -> (B, T, C)"""
    e = torch.exp(k - k.amax(dim=1, keepdim=True))  # the max cancels in the ratio; guards exp
    return torch.sigmoid(q) * (torch.cumsum(e * v, dim=1) / torch.cumsum(e, dim=1))


def project_qkv(h, params: dict, config: GPTConfig):
    """q, k, v from shared projections or small MLPs, each distinct one computed once.
    params: a layer's `attn.` keys without the prefix. Shapes: h (B, T, C) -> q, k, v (B, T, C)"""
    src, out = qkv_sources(config), {}
    for n in dict.fromkeys(src.values()):
        if config.qkv_mlp:
            m = f"mlp_{n}."
            hidden = F.gelu(F.linear(h, params[m + "w_fc"], params[m + "b_fc"]), approximate="tanh")
            out[n] = F.linear(hidden, params[m + "w_proj"], params[m + "b_proj"])
        else:
            out[n] = F.linear(h, params[f"w_{n}"], params[f"b_{n}"])
    return out[src["q"]], out[src["k"]], out[src["v"]]


def _weights(q, k, params: dict, config: GPTConfig, alibi):
    """The (B, H, T, T) attention weights, built explicitly. Shapes: q, k (B, H, T, D)"""
    T = q.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    if config.similarity == "dot":
        scores = (q @ k.transpose(-1, -2)) * scale
    elif config.similarity == "neg_sq_dist":
        scores = neg_sq_distance(q, k, scale)
    else:  # one learned temperature per head, stored as its log
        scores = cosine_similarity(q, k, params["log_temp"].exp()[:, None, None])
    if alibi is not None:
        scores = scores + alibi[0].to(q.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if config.post_softmax_mask:  # the wrong way: the future takes part in the normaliser
        return torch.softmax(scores, dim=-1) * causal
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


def attention(h, params: dict, config: GPTConfig, rng=None):
    """Causal self-attention with the experiments the config names; dropout on the weights with a
    torch.Generator. params: a layer's `attn.` keys without the prefix. Shapes: h (B, T, C) -> (B, T, C)"""
    q, k, v = project_qkv(h, params, config)
    if config.attention == "aft_simple":
        return F.linear(aft_simple(q, k, v), params["w_o"], params["b_o"])
    B, T, C = h.shape
    H = config.n_head
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    if config.positions == "rope":
        q, k = _rotate(q), _rotate(k)
    dropout_on = rng is not None and config.dropout > 0
    alibi = _alibi(H, T, q.dtype) if config.positions == "alibi" else None
    if config.similarity == "dot" and not config.post_softmax_mask and not dropout_on:
        if alibi is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=alibi[1].to(h.device))
    else:
        y = dropout(_weights(q, k, params, config, alibi), config.dropout, rng) @ v
    y = y.transpose(1, 2).reshape(B, T, C)
    return F.linear(y, params["w_o"], params["b_o"])


def block_attention(config: GPTConfig):
    """The attention torch_ref.gpt's blocks run for this config: None for the straight one, else
    f(h, params, rng) -> out."""
    if straight_attention(config):
        return None
    return lambda h, params, rng: attention(h, params, config, rng)


def add_positions(tok, params: dict, config: GPTConfig):
    """tok (* sqrt(C)) + the config's position signal (wpe[:T], sinusoidal, or none).
    Shapes: tok (B, T, C) -> (B, T, C)"""
    T, C = tok.shape[1], config.n_embd
    x = tok * math.sqrt(C) if config.scale_embeddings else tok
    if config.positions == "learned":
        x = x + params["wpe.weight"][:T]
    elif config.positions == "sinusoidal":
        x = x + _sinusoidal(T, C, x.dtype)
    return x
