import math

import einx
import torch
from torch import nn

from .functional import softmax
from .layers import Linear


class RoPE(nn.Module):
    """Rotary embedding; angles computed for the positions asked, in the input's dtype."""

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None):
        super().__init__()
        self.theta, self.d_k, self.max_seq_len = theta, d_k, max_seq_len

    def forward(self, x, token_positions):
        k = torch.arange(self.d_k // 2, device=x.device, dtype=x.dtype)
        inv = self.theta ** (-2.0 * k / self.d_k)
        angle = token_positions.to(x.dtype).unsqueeze(-1) * inv
        rot = torch.polar(torch.ones_like(angle), angle)
        xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(xc * rot).flatten(-2)


def sdpa(q, k, v, mask=None):
    scores = einx.dot("... q d, ... k d -> ... q k", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    return einx.dot("... q k, ... k d -> ... q d", softmax(scores, dim=-1), v)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, rope: RoPE | None = None, device=None, dtype=None):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = Linear(d_model, d_model, device, dtype)
        self.k_proj = Linear(d_model, d_model, device, dtype)
        self.v_proj = Linear(d_model, d_model, device, dtype)
        self.output_proj = Linear(d_model, d_model, device, dtype)
        self.rope = rope

    def forward(self, x, token_positions=None):
        T = x.shape[-2]
        q = einx.id("... t (h d) -> ... h t d", self.q_proj(x), h=self.num_heads)
        k = einx.id("... t (h d) -> ... h t d", self.k_proj(x), h=self.num_heads)
        v = einx.id("... t (h d) -> ... h t d", self.v_proj(x), h=self.num_heads)
        if self.rope is not None:
            pos = torch.arange(T, device=x.device) if token_positions is None else token_positions[..., None, :]
            q, k = self.rope(q, pos), self.rope(k, pos)
        mask = torch.tril(torch.ones(T, T, device=x.device))
        out = sdpa(q, k, v, mask)
        return self.output_proj(einx.id("... h t d -> ... t (h d)", out))
