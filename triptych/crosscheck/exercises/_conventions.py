"""Conventions shared by several groups: different but legitimate answers (Variant kind
"convention") and the named mistakes that must be recognised under each of them.

- AdamW: torch decays the old weights before the Adam step; the CS336 handout (and Loshchilov &
  Hutter's Algorithm 2 as often transcribed) decays after it, and folds the bias corrections into
  the step size, lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t), with eps outside them. Each pair of choices
  is an AdamW; a mistake (no bias correction, L2 in the gradient) is named whichever pair it uses.
- Attention masks: a query row that may attend to nothing is undefined in most courses; real code
  leaves it NaN (softmax of all -inf), zeros (a guarded softmax) or uniform (a finite fill).

Callers pass their own `run(inputs, **knobs)`: one step on one array (blocks-backward adamw_step),
several steps on torch parameters (cs336 get_adamw_cls), with adamw_numpy() doing the arithmetic.
The leading underscore keeps this module out of the catalogue's discovery.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from triptych.crosscheck.spec import Forms, Variant

# ---------------------------------------------------------------- AdamW

ADAMW_FIX = ("numpy_impl.optim", "adamw_step", "decoupled")


def adamw_numpy(p, g, m, v, t: int, lr: float, betas, eps: float, weight_decay: float, *, decay: str = "before",
                eps_form: str = "standard", l2: bool = False, bias_correction: bool = True, decay_lr: bool = True):
    """One AdamW step in float64 with each choice a knob: (new p, new m, new v), NumPy arrays.

    decay "before" shrinks the old p (torch), "after" the updated p (the CS336 handout), "none"
    leaves it out; eps_form "standard" is lr * m_hat / (sqrt(v_hat) + eps), "efficient" is
    lr_t * m / (sqrt(v) + eps) with lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t); l2 folds wd * p into
    the gradient (Adam with L2, not AdamW); decay_lr=False shrinks by wd instead of lr * wd."""
    p, g, m, v = (np.asarray(a, dtype=np.float64) for a in (p, g, m, v))
    b1, b2 = betas
    if l2:
        g = g + weight_decay * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    if not bias_correction:
        update = lr * m / (np.sqrt(v) + eps)
    elif eps_form == "efficient":
        update = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    else:
        update = lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    shrink = 1 - (lr * weight_decay if decay_lr else weight_decay)
    if l2 or decay == "none":
        new = p - update
    elif decay == "before":
        new = p * shrink - update
    else:  # "after"
        new = (p - update) * shrink
    return new, m, v


_AFTER = ("weight decay applied after the Adam step (the CS336 handout's order)",
          "equivalent in principle; torch applies it first (the two differ by lr * wd times the step)")
_EFFICIENT = ("eps outside the bias corrections, lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) (Kingma & Ba's efficient "
              "form, the CS336 handout's)",
              "the same Adam with eps scaled by 1/sqrt(1 - b2^t); torch adds eps to sqrt(v_hat)")


def adamw_conventions(run: Callable[..., object]) -> tuple[Variant, ...]:
    """The three AdamW forms besides torch's, as conventions: run(inputs, decay=, eps_form=)."""
    both = ("the CS336 handout's AdamW: weight decay after the Adam step, eps outside the bias corrections "
            "(lr_t = lr sqrt(1 - b2^t) / (1 - b1^t))",
            "equivalent in principle; torch decays first and adds eps to sqrt(v_hat)")
    return (
        Variant("adamw_decay_after", *_AFTER, lambda i: run(i, decay="after"), ADAMW_FIX, kind="convention"),
        Variant("adamw_efficient_eps", *_EFFICIENT, lambda i: run(i, eps_form="efficient"), ADAMW_FIX,
                kind="convention"),
        Variant("adamw_decay_after+adamw_efficient_eps", *both,
                lambda i: run(i, decay="after", eps_form="efficient"), ADAMW_FIX, kind="convention"),
    )


def adamw_mistakes(run: Callable[..., object], prefix: str = "adamw") -> tuple[Variant, ...]:
    """The usual AdamW mistakes, each one Variant whose Forms are the mistake under torch's decay order
    and under the handout's, with either eps form: run(inputs, **knobs) as adamw_conventions."""
    fix = ("numpy_impl.optim", "adamw_step")
    mistakes = (
        ("l2_in_gradient", "Adam with weight_decay * p added to the GRADIENT (L2), not decoupled",
         "AdamW (Loshchilov & Hutter) shrinks p by lr * wd directly; folded into g the decay is rescaled by 1/sqrt(v)",
         dict(l2=True), (*fix, "decoupled"), ("before",)),
        ("no_bias_correction", "the update WITHOUT bias correction (m / (sqrt(v) + eps))",
         "m and v start at 0, so early averages are too small by 1 - beta^t; divide it out",
         dict(bias_correction=False), (*fix, "bias1 = "), ("before", "after")),
        ("decay_without_lr", "p (1 - weight_decay): the decay not multiplied by lr",
         "the decoupled decay is lr * weight_decay per step", dict(decay_lr=False),
         (*fix, "1.0 - lr * weight_decay"), ("before", "after")),
        ("no_weight_decay", "plain Adam: the weight decay left out",
         "AdamW shrinks every matrix by lr * weight_decay each step", dict(decay="none"), (*fix, "decoupled"), ("none",)),
    )
    out = []
    for name, says, why, knobs, fix_at, orders in mistakes:
        forms = [{"decay": order, "eps_form": eps_form, **knobs} for order in orders
                 for eps_form in (("standard", "efficient") if knobs.get("bias_correction", True) else ("standard",))]
        out.append(Variant(f"{prefix}_{name}", says, why, lambda i, forms=forms: Forms(run(i, **k) for k in forms), fix_at))
    return tuple(out)


# ---------------------------------------------------------------- fully masked attention rows

def fill_masked_rows(outputs, fully: np.ndarray, how: str, v: np.ndarray | None = None) -> tuple:
    """The attention outputs (out (..., T_q, D_v), optional weights (..., T_q, T_k)) with the rows of
    the queries in `fully` ((..., T_q) bool, broadcastable; or one such array per output) set as code
    with that habit sets them:
    "nan" (softmax of all -inf), "zero" (a guarded softmax), "uniform" (a finite fill: every key
    weighs 1/T_k, so out is the mean of v over the keys)."""
    outs = [np.array(o, dtype=np.result_type(o, np.float32)) for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    res = []
    for n, o in enumerate(outs):
        f = fully[n] if isinstance(fully, (tuple, list)) else fully
        rows = np.broadcast_to(np.asarray(f, bool)[..., None], o.shape)
        if how == "nan":
            fill = np.full_like(o, np.nan)
        elif how == "zero":
            fill = np.zeros_like(o)
        elif n == 0:  # uniform: the mean of the values
            fill = np.broadcast_to(np.asarray(v).mean(axis=-2, keepdims=True), o.shape).astype(o.dtype)
        else:
            fill = np.full_like(o, 1.0 / o.shape[-1])
        res.append(np.where(rows, fill, o))
    return tuple(res)


def no_key_rows(mask, lead: tuple, heads: int | None = None):
    """The queries whose mask row allows no key: a (lead) bool array for outputs shaped (lead, D) (a
    head-split SDPA: lead = q.shape[:-1]); with heads, a multi-head layer's pair (out rows (B, T_q),
    weight rows (B, heads, T_q)), every head masked alike. mask: bool True = may attend, (T_q, T_k)
    or broadcastable (B, 1, T_q, T_k); None: no mask, no such query."""
    if heads is None:
        return np.zeros(lead, bool) if mask is None else np.broadcast_to(~np.asarray(mask).any(-1), lead)
    b, t = lead
    rows = np.zeros(t, bool) if mask is None else ~np.asarray(mask).any(-1)  # (T_q,) or (B, 1, T_q)
    per_head = np.broadcast_to(rows, (b, heads, t))
    return per_head.any(1), per_head


_ROWS = {
    "nan": ("fully masked query rows left NaN (softmax of all -inf)",
            "a query that may attend to nothing is undefined here; NaN is what a plain softmax gives, but it "
            "spreads through every later sum, so mask such rows out downstream"),
    "zero": ("fully masked query rows set to zeros (a guarded softmax)",
             "a query that may attend to nothing is undefined here; zeros are numpy_impl's and torch SDPA's choice"),
    "uniform": ("fully masked query rows attending to every key alike (a finite fill such as -1e9)",
                "a query that may attend to nothing is undefined here; a finite fill gives it uniform weights"),
}


def masked_rows_variants(right: Callable[[dict], tuple], fully_masked: Callable[[dict], np.ndarray],
                         value_key: str = "v", defined: bool = False, prefix: str = "") -> tuple[Variant, ...]:
    """masked_rows_nan, masked_rows_zero, masked_rows_uniform for an attention exercise: right(i) is
    the correct output tuple, fully_masked(i) the (..., T_q) bool of queries that see no key.
    defined=True (the exercise's contract says what those rows hold) makes them named mistakes
    (prefix_masked_rows_...) instead of conventions."""
    out = []
    for how, (says, why) in _ROWS.items():
        def compute(i, how=how):
            fully = fully_masked(i)
            if not any(np.any(f) for f in (fully if isinstance(fully, (tuple, list)) else (fully,))):
                raise ValueError("no fully masked row in this case")  # nothing to tell apart: no match
            return fill_masked_rows(right(i), fully, how, i.get(value_key))
        if defined:
            why = ("this exercise defines a query that may attend to nothing: zero weights and a zero output "
                   "(numpy_impl's choice, and torch's F.scaled_dot_product_attention's)")
        out.append(Variant(f"{prefix}masked_rows_{how}", says, why, compute, ("numpy_impl.attention", "attn_softmax",
                                                                               "np.isneginf"),
                           kind="mistake" if defined else "convention"))
    return tuple(out)


def mask_finite_fill(right_scores: Callable[[dict], np.ndarray], fill: float = -1e9) -> Variant:
    """Scores masked with a finite fill instead of -inf: the same softmax wherever a query sees a key.
    right_scores(i) gives the correct scores with -inf where masked (the exercise's `scores` output)."""
    return Variant("mask_finite_fill", "masked scores filled with a large finite negative number (-1e9, "
                   "finfo.min) instead of -inf",
                   "its softmax equals the -inf one wherever a query may attend to some key",
                   lambda i: np.where(np.isneginf(right_scores(i)), fill, right_scores(i)),
                   ("numpy_impl.attention", "apply_mask", "-np.inf"), kind="convention")
