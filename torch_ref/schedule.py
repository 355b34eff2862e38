"""Linear warmup, cosine decay, floor, torch side. The cosine piece is torch's own
CosineAnnealingLR in its closed form (torch.optim.lr_scheduler, eta_min = min_lr, T_max = Tc - Tw,
counted from Tw), the warmup torch arithmetic; after Tc the floor (CosineAnnealingLR alone would
climb back up: it is periodic). numpy_impl/schedule.py explains the schedule.
"""
from __future__ import annotations

import numpy as np
import torch

from triptych.common.checks import InputError
from triptych.common.checks import check_schedule

__all__ = ["lr_cosine_schedule"]


def _cosine_annealing(t: torch.Tensor, max_lr: float, min_lr: float, t_max: int) -> torch.Tensor:
    """CosineAnnealingLR's learning rate after t steps from max_lr, by the scheduler's own
    _get_closed_form_lr (one throwaway optimizer per distinct t; schedules are short)."""
    out = torch.empty_like(t)
    for i, step in enumerate(t.tolist()):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=max_lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=min_lr)
        sched.last_epoch = int(step)
        out[i] = sched._get_closed_form_lr()[0]
    return out


def lr_cosine_schedule(it, max_learning_rate: float, min_learning_rate: float, warmup_iters: int,
                       cosine_cycle_iters: int) -> torch.Tensor:
    """Shapes: it any (integers >= 0) -> same, float64"""
    check_schedule(max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters)
    it = torch.as_tensor(np.asarray(it.numpy() if isinstance(it, torch.Tensor) else it), dtype=torch.float64)
    if not bool(torch.all(it >= 0)):
        raise InputError(f"it: expected steps >= 0, got {float(it.min())!r}")
    flat = it.reshape(-1)
    in_cycle = torch.clamp(flat, warmup_iters, cosine_cycle_iters) - warmup_iters
    cosine = _cosine_annealing(in_cycle, float(max_learning_rate), float(min_learning_rate),
                               cosine_cycle_iters - warmup_iters)
    warm = flat / max(warmup_iters, 1) * max_learning_rate
    lr = torch.where(flat < warmup_iters, warm, torch.where(flat <= cosine_cycle_iters, cosine,
                                                              torch.full_like(flat, float(min_learning_rate))))
    return lr.reshape(it.shape)
