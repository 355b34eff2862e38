"""Training-loop helpers, nanoGPT style."""
import math

import torch
import torch.nn.functional as F


def get_lr(it, max_lr, min_lr, warmup_iters, lr_decay_iters):
    # 1) linear warmup; count this step too so the first step does not use lr = 0
    if it < warmup_iters:
        return max_lr * (it + 1) / warmup_iters
    # 2) after decay, the floor
    if it > lr_decay_iters:
        return min_lr
    # 3) in between, cosine down to min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (max_lr - min_lr)


def log_softmax(logits, dim=-1):
    return logits - torch.logsumexp(logits, dim=dim, keepdim=True)


def cross_entropy(logits, targets):
    logits = logits.reshape(-1, logits.size(-1))
    targets = targets.reshape(-1)
    return -log_softmax(logits).gather(1, targets[:, None]).mean()


def silu(x):
    return F.sigmoid(x) * x
