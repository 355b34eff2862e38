"""Probability of the correct class and cross-entropy from a vector of logits.

    p_target = softmax(z)[t] = exp(z_t - m) / sum_j exp(z_j - m)      (m = max z: no overflow)
    CE       = -log p_target = logsumexp(z) - z_t                      (in nats)
"""
from __future__ import annotations

import math

from accounting.quantity import Quantity
from common.checks import InputError


def _check(logits, target: int) -> list[float]:
    try:
        z = [float(v) for v in logits]
    except (TypeError, ValueError):
        raise InputError(f"logits: expected a list of numbers, got {logits!r}") from None
    if not z:
        raise InputError("logits: expected at least one value, got none")
    if not all(math.isfinite(v) for v in z):
        raise InputError(f"logits: expected finite values, got {z}")
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < len(z):
        raise InputError(f"target: expected an index in [0, {len(z) - 1}], got {target!r}")
    return z


def target_probability_and_loss(logits, target: int, labels=None) -> list[Quantity]:
    z = _check(logits, target)
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    ce = lse - z[target]
    p = math.exp(-ce)
    name = f"'{labels[target]}'" if labels else f"index {target}"
    if m <= 50:  # small logits: show the exponentials themselves
        exps = " + ".join(f"e^{v:g}" for v in z)
        p_formula = f"e^{z[target]:g} / ({exps}) = {math.exp(z[target]):.6g} / {math.exp(lse):.6g} = {p:.6g}"
    else:  # e^z would overflow: the same ratio with every exponent shifted by the max
        p_formula = f"e^({z[target]:g} - {m:g}) / sum_j e^(z_j - {m:g}) = {p:.6g}"
    return [
        Quantity("p_target", f"probability of the correct word {name}", p, "probability", p_formula),
        Quantity("cross_entropy", "cross-entropy loss", ce, "nats",
                 f"-ln p = logsumexp(z) - z_t = {lse:.6g} - {z[target]:g} = {ce:.6g}"),
    ]
