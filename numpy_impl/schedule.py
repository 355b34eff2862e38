"""The learning-rate schedule of most LLM training runs: linear warmup, then one cosine half-period
down to a floor, then the floor (Loshchilov and Hutter 2017's SGDR without restarts; the form of
Stanford CS336's handout, GPT-3 and Llama).

    it < Tw:          lr = it / Tw * max_lr
    Tw <= it <= Tc:   lr = min_lr + (1 + cos(pi (it - Tw) / (Tc - Tw))) / 2 * (max_lr - min_lr)
    it > Tc:          lr = min_lr

Warmup starts at 0 (step 0 takes no step at all) and reaches max_lr exactly at it = Tw, where the
cosine starts from its top; the cosine reaches min_lr exactly at it = Tc, so the pieces join.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_schedule

__all__ = ["lr_cosine_schedule"]


def lr_cosine_schedule(it, max_learning_rate: float, min_learning_rate: float, warmup_iters: int,
                       cosine_cycle_iters: int) -> np.ndarray:
    """The learning rate at step(s) `it` (see the module docstring), in float64.

    Shapes: it any (integers >= 0) -> same, float64
    """
    check_schedule(max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters)
    it = np.asarray(it, dtype=np.float64)
    if not np.all(it >= 0):
        raise InputError(f"it: expected steps >= 0, got {it.min()!r}")
    # max(Tw, 1): with no warmup the first branch never applies, and 0/0 must not be computed.
    warm = it / max(warmup_iters, 1) * max_learning_rate
    progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)  # 0 at Tw, 1 at Tc
    cosine = min_learning_rate + 0.5 * (1.0 + np.cos(np.pi * progress)) * (max_learning_rate - min_learning_rate)
    return np.where(it < warmup_iters, warm, np.where(it <= cosine_cycle_iters, cosine, min_learning_rate))
