"""A correct torch answer to some exercises of blocks-backward and blocks-attention, written by hand
(no autograd), as a user would: the checker hands it torch tensors and reads tensors back."""
import math

import torch


def layer_norm_backward(dout, x, weight, bias, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    rstd = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    xhat = (x - mu) * rstd
    g = dout * weight
    dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    lead = tuple(range(x.dim() - 1))
    return dx, (dout * xhat).sum(lead), dout.sum(lead)


def cross_entropy_backward(dloss, logits, targets, ignore_index=-100):
    keep = targets != ignore_index
    grad = torch.softmax(logits, -1)
    grad = grad - torch.nn.functional.one_hot(torch.where(keep, targets, 0), logits.shape[-1]).to(logits.dtype)
    return grad * keep.unsqueeze(-1) * (dloss / max(int(keep.sum()), 1))


def lora_linear_backward(dy, x, w, b, lora, alpha, use_rslora=False, dropout_mask=None):
    A, B = lora["lora_A"], lora["lora_B"]
    r = A.shape[0]
    s = alpha / math.sqrt(r) if use_rslora else alpha / r
    xd = x if dropout_mask is None else x * dropout_mask
    dy2, xd2 = dy.reshape(-1, dy.shape[-1]), xd.reshape(-1, x.shape[-1])
    du = s * dy2 @ B
    dx_branch = (du @ A).reshape(x.shape)
    dx = dy @ w + (dx_branch if dropout_mask is None else dx_branch * dropout_mask)
    return du.T @ xd2, s * dy2.T @ (xd2 @ A.T), dx


def adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    b1, b2 = betas
    m = torch.lerp(m, g, 1 - b1)
    v = b2 * v + (1 - b2) * g * g
    denom = (v / (1 - b2 ** step)).sqrt() + eps
    return p * (1 - lr * weight_decay) - lr / (1 - b1 ** step) * m / denom, m, v


def scaled_dot_product_attention(q, k, v, mask=None, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)  # a fully masked row: 0/0 -> no weights at all
    return w @ v, w


def scaled_dot_product_attention_backward(dout, q, k, v, weights, scale=None):
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    dw = dout @ v.transpose(-1, -2)
    ds = weights * (dw - (dw * weights).sum(-1, keepdim=True)) * scale
    return ds @ k, ds.transpose(-1, -2) @ q, weights.transpose(-1, -2) @ dout


def apply_rope(x, positions=None, base=10000.0, layout="half"):
    T, D = x.shape[-2:]
    pos = torch.arange(T, dtype=torch.float64) if positions is None else positions.to(torch.float64)
    ang = pos[..., None] * base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    if ang.dim() == 3:
        ang = ang.reshape((x.shape[0],) + (1,) * (x.dim() - 3) + ang.shape[1:])
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    if layout == "half":
        a, b = x.chunk(2, -1)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(-2)
