import math

import numpy as np
import torch


def get_batch(data, batch_size, context_length, device):
    n = len(data)
    ix = torch.randint(0, n - context_length, (batch_size,))
    data = torch.as_tensor(np.asarray(data), dtype=torch.long)
    x = torch.stack([data[i:i + context_length] for i in ix.tolist()])
    y = torch.stack([data[i + 1:i + 1 + context_length] for i in ix.tolist()])
    return x.to(device), y.to(device)


def clip_grad_norm(params, max_norm):
    params = [p for p in params if p.grad is not None]
    norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for p in params:
            p.grad.detach().mul_(coef)


def lr_cosine(it, max_lr, min_lr, warmup_iters, cosine_cycle_iters):
    if it < warmup_iters:
        return max_lr * it / warmup_iters
    if it > cosine_cycle_iters:
        return min_lr
    ratio = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(ratio * math.pi))


class AdamW(torch.optim.Optimizer):
    # Same order of operations as torch.optim.AdamW: decoupled decay first, then the bias-corrected step.
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p.data)
                    st["exp_avg_sq"] = torch.zeros_like(p.data)
                st["step"] += 1
                t = st["step"]
                p.data.mul_(1 - group["lr"] * group["weight_decay"])
                st["exp_avg"] = b1 * st["exp_avg"] + (1 - b1) * g
                st["exp_avg_sq"] = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
                m_hat = st["exp_avg"] / (1 - b1 ** t)
                v_hat = st["exp_avg_sq"] / (1 - b2 ** t)
                p.data -= group["lr"] * m_hat / (v_hat.sqrt() + group["eps"])
        return loss
