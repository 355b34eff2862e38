"""Cross-entropy as torch computes it (the referee for numpy_impl/losses.py).

F.cross_entropy's mean reduction divides by the number of kept positions, which is 0/0 = NaN when
every target is ignored; summing and dividing by max(kept, 1) gives the same value otherwise and 0
(with zero gradients) in that case, the convention of all three backends.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from triptych.common.checks import InputError, check_float, check_min_ndim

__all__ = ["cross_entropy"]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Shapes: logits (..., V), targets (...) ints -> loss (0-d)"""
    check_min_ndim("logits", logits, 2, "(..., V)")
    check_float("logits", logits)
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise InputError(f"targets: expected integer class ids, got dtype {str(targets.dtype).replace('torch.', '')}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise InputError(f"targets: expected shape {tuple(logits.shape[:-1])} (logits without V), got {tuple(targets.shape)}")
    V = logits.shape[-1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bool(bad.any()):
        raise InputError(f"targets: expected ids in [0, {V}) or ignore_index={ignore_index}, got {int(targets[bad][0])}")
    kept = int((targets != ignore_index).sum())
    total = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=ignore_index, reduction="sum")
    return total / max(kept, 1)
