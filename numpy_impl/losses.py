"""Cross-entropy for next-token prediction, forward and hand-written backward.

    loss = mean over kept positions of  -log softmax(logits)[target]
         = mean of  logsumexp(logits) - logits[target]

Positions whose target equals `ignore_index` (-100, torch's default) contribute neither loss nor
gradient, and the mean is over the kept positions only. If every position is ignored the loss is 0
with zero gradients (torch's mean reduction would give 0/0 = NaN; all three backends here give 0).
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_float, check_min_ndim

__all__ = ["cross_entropy", "cross_entropy_forward", "cross_entropy_backward"]
__backend_only__ = ["cross_entropy_forward"]  # the (loss, cache) form exists for the hand-written backward


def _check(logits, targets, ignore_index: int) -> None:
    check_min_ndim("logits", logits, 2, "(..., V)")
    check_float("logits", logits)
    if not np.issubdtype(targets.dtype, np.integer):
        raise InputError(f"targets: expected integer class ids, got dtype {targets.dtype}")
    if targets.shape != logits.shape[:-1]:
        raise InputError(f"targets: expected shape {tuple(logits.shape[:-1])} (logits without V), got {tuple(targets.shape)}")
    V = logits.shape[-1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bad.any():
        raise InputError(f"targets: expected ids in [0, {V}) or ignore_index={ignore_index}, got {targets[bad][0]}")


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray, ignore_index: int = -100):
    """Shapes: logits (..., V), targets (...) ints -> loss (0-d, logits' dtype), cache"""
    targets = np.asarray(targets)
    _check(logits, targets, ignore_index)
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # (N, V)
    t = targets.reshape(-1)
    keep = t != ignore_index  # (N,)
    t_safe = np.where(keep, t, 0)  # any valid index; ignored rows are zeroed below
    n_kept = max(int(keep.sum()), 1)
    shifted = flat - flat.max(axis=-1, keepdims=True)  # exp cannot overflow; cancels in the ratio
    e = np.exp(shifted)
    sum_e = e.sum(axis=-1, keepdims=True)
    rows = np.arange(flat.shape[0])
    nll = np.log(sum_e[:, 0]) - shifted[rows, t_safe]  # logsumexp - logit[target], per position
    loss = np.asarray(np.sum(nll * keep) / n_kept, dtype=logits.dtype)
    return loss, (e / sum_e, t_safe, keep, n_kept, logits.shape)


def cross_entropy_backward(dloss, cache) -> np.ndarray:
    """d loss / d logits = (softmax(logits) - onehot(target)) / n_kept on kept rows, 0 on ignored ones.

    Shapes: dloss scalar, cache -> dlogits (..., V)
    """
    probs, t_safe, keep, n_kept, shape = cache
    dlogits = probs.copy()  # d logsumexp / d logits = softmax
    dlogits[np.arange(len(t_safe)), t_safe] -= 1.0  # d (-logits[target]) / d logits = -onehot
    dlogits *= (keep * (float(dloss) / n_kept)).astype(probs.dtype)[:, None]  # mean over kept rows
    return dlogits.reshape(shape)


def cross_entropy(logits: np.ndarray, targets: np.ndarray, ignore_index: int = -100) -> np.ndarray:
    """Shapes: logits (..., V), targets (...) ints -> loss (0-d)"""
    return cross_entropy_forward(logits, targets, ignore_index)[0]
