import math


def cosine_with_warmup(t, max_lr, min_lr, warmup_iters, cosine_cycle_iters):
    if t < warmup_iters:
        return max_lr * t / warmup_iters
    progress = min(1.0, (t - warmup_iters) / (cosine_cycle_iters - warmup_iters))
    return max_lr * 0.5 * (1 + math.cos(math.pi * progress))
