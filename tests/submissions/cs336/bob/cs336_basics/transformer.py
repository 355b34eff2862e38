import torch
from torch import nn

from . import functional as F


def _init(*shape, std=0.02):
    w = torch.empty(*shape)
    nn.init.trunc_normal_(w, std=std, a=-3 * std, b=3 * std)
    return nn.Parameter(w)


class Attention(nn.Module):
    def __init__(self, d_model, num_heads, theta=None):
        super().__init__()
        self.h = num_heads
        self.theta = theta
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.output_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, positions=None):
        *lead, T, D = x.shape
        dh = D // self.h

        def heads(t):
            return t.view(*lead, T, self.h, dh).transpose(-3, -2)

        q = heads(F.linear(x, self.q_proj.weight))
        k = heads(F.linear(x, self.k_proj.weight))
        v = heads(F.linear(x, self.v_proj.weight))
        if self.theta is not None:
            if positions is None:
                positions = torch.arange(T, device=x.device)
            positions = positions.unsqueeze(-2)
            q = F.rope(q, positions, self.theta)
            k = F.rope(k, positions, self.theta)
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        y = F.attention(q, k, v, mask)
        y = y.transpose(-3, -2).reshape(*lead, T, D)
        return F.linear(y, self.output_proj.weight)


class FFN(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)

    def forward(self, x):
        return F.swiglu(x, self.w1.weight, self.w2.weight, self.w3.weight)


class Norm(nn.Module):
    def __init__(self, d_model, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x):
        return F.rmsnorm(x, self.weight, self.eps)


class Block(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, theta):
        super().__init__()
        self.ln1 = Norm(d_model)
        self.attn = Attention(d_model, num_heads, theta)
        self.ln2 = Norm(d_model)
        self.ffn = FFN(d_model, d_ff)

    def forward(self, x):
        h = x + self.attn(self.ln1(x))
        out = h + self.ffn(self.ln2(h))
        return out


class LM(nn.Module):
    def __init__(self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta):
        super().__init__()
        self.token_embeddings = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList([Block(d_model, num_heads, d_ff, rope_theta) for _ in range(num_layers)])
        self.ln_final = Norm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx):
        x = self.token_embeddings.weight[idx]
        for layer in self.layers:
            x = layer(x)
        x = self.ln_final(x)
        return F.linear(x, self.lm_head.weight)
