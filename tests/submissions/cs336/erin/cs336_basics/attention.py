import math

import torch

from .rope import RotaryEmbedding


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    e = torch.exp(x - x.max(dim=dim, keepdim=True).values)
    return e / e.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(Q, K, V, mask=None):
    scores = Q @ K.transpose(-1, -2) / math.sqrt(K.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return softmax(scores, dim=-1) @ V


def multihead_self_attention(x, wq, wk, wv, wo, num_heads, rope: RotaryEmbedding | None = None, positions=None):
    *batch, seq_len, d_model = x.shape
    d_head = d_model // num_heads

    def split(t):
        return t.reshape(*batch, seq_len, num_heads, d_head).transpose(-2, -3)

    q, k, v = split(x @ wq.T), split(x @ wk.T), split(x @ wv.T)
    if rope is not None:
        if positions is None:
            positions = torch.arange(seq_len)
        q, k = rope(q, positions), rope(k, positions)
    mask = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))
    out = scaled_dot_product_attention(q, k, v, mask)
    return out.transpose(-2, -3).reshape(*batch, seq_len, d_model) @ wo.T
