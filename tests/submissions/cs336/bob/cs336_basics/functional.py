# Stateless pieces; the modules in transformer.py hold the parameters.
import math

import torch


def linear(x, w):
    # w is (d_out, d_in) like nn.Linear
    return x @ w.T


def silu(x):
    return x * torch.sigmoid(x)


def softmax(x, dim=-1):
    x = x - torch.max(x, dim=dim, keepdim=True).values
    ex = torch.exp(x)
    return ex / torch.sum(ex, dim=dim, keepdim=True)


def rmsnorm(x, g, eps=1e-5):
    ms = (x * x).mean(-1, keepdim=True)
    return x * torch.rsqrt(ms + eps) * g


def swiglu(x, w1, w2, w3):
    return linear(silu(linear(x, w1)) * linear(x, w3), w2)


def attention(Q, K, V, mask=None):
    d_k = Q.size(-1)
    scores = Q @ K.transpose(-2, -1) / math.sqrt(d_k)
    if mask is not None:
        # large negative instead of -inf, so a row with nothing to attend to does not give NaN
        scores = torch.where(mask, scores, torch.tensor(-1e9, dtype=scores.dtype))
    return softmax(scores, dim=-1) @ V


def rope(x, positions, theta):
    # rotate pairs (x0, x1), (x2, x3), ... by pos * theta^(-2i/d)
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=x.dtype, device=x.device)
    freqs = theta ** (-2 * i / d)
    ang = positions.to(x.dtype)[..., None] * freqs
    c, s = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out


def cross_entropy(logits, targets):
    m = logits.max(dim=-1, keepdim=True).values
    lse = m.squeeze(-1) + torch.log(torch.exp(logits - m).sum(dim=-1))
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)
    return torch.mean(lse - picked)
