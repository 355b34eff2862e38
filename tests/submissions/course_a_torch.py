"""Course A in torch, written as a student would (a correct solution; tests grade it). The
positional table is built in float32, torch's default, as the tutorial does: not a mistake."""
import math

import torch
import torch.nn as nn


def get_multihead_qkv(x, params, n_heads, kv=None):
    kv = x if kv is None else kv
    B, _, C = x.shape
    q = (x @ params["w_q"].T + params["b_q"]).view(B, -1, n_heads, C // n_heads).transpose(1, 2)
    k = (kv @ params["w_k"].T + params["b_k"]).view(B, -1, n_heads, C // n_heads).transpose(1, 2)
    v = (kv @ params["w_v"].T + params["b_v"]).view(B, -1, n_heads, C // n_heads).transpose(1, 2)
    return q, k, v


def calculate_multihead_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.d_model, self.n_heads, self.d_k = d_model, n_heads, d_model // n_heads
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)

    def split(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_k).transpose(1, 2)

    def forward(self, query, key, value, mask=None):
        q, k, v = self.split(self.W_q(query)), self.split(self.W_k(key)), self.split(self.W_v(value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        B, _, T, _ = q.shape
        out = (weights @ v).transpose(1, 2).contiguous().view(B, T, self.d_model)
        return self.W_o(out), weights


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=5000):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x):
        return x + self.pe[:, : x.size(1)]
