"""Probability of the correct class and cross-entropy from a vector of logits.

    p_target = softmax(z)[t] = exp(z_t - m) / sum_j exp(z_j - m)      (m = max z: no overflow)
    CE       = -log p_target = logsumexp(z) - z_t                      (in nats)
             = log sum_j exp(z_j - m) - (z_t - m)                     (computed so: no rounding at large z)
"""
from __future__ import annotations

import math

from triptych.calculators.quantity import Quantity
from triptych.common.checks import InputError


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
    # CE = log sum_j e^(z_j - m) - (z_t - m), both terms small. Adding m back first (lse - z_t) would
    # round: at z = 1e15 floats are 0.125 apart, so 1e15 + ln 2 - 1e15 gives 0.75 instead of ln 2.
    shifted_lse = math.log(sum(math.exp(v - m) for v in z))
    ce = shifted_lse - (z[target] - m)
    lse = m + shifted_lse  # for the formula shown
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
                 f"-ln p = logsumexp(z) - z_t = {lse:.6g} - {z[target]:g} = {ce:.6g}" if m <= 50 else
                 f"-ln p = ln sum_j e^(z_j - {m:g}) - (z_t - {m:g}) = {shifted_lse:.6g} - ({z[target] - m:g}) = {ce:.6g}"),
    ]
