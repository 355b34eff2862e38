"""The training half of the `cs336` group: gradient clipping, AdamW, the cosine schedule and
get_batch, as Stanford CS336 assignment 1's adapters call them; inputs, references, named variants
and get_batch's statistical grader.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.crosscheck.spec import locate

# Columns of the report that mean nothing for packed ids and bytes (compared as lists, not within a tolerance).
NO_NUMBERS = {"max_abs_err": None, "tolerance": None, "l2": None, "l2_ref": {}, "shape": None, "expected_shape": None}

# ---------------------------------------------------------------- gradient clipping

CLIP_ORDER = tuple(f"p{j}" for j in range(6))
FROZEN = ("p5",)  # as in the handout's test: the last parameter frozen, its .grad None


def clip_inputs(max_norm, grad_scale=1.0):
    def make(rng, dt):
        params = {k: rng.standard_normal((5, 5)).astype(dt) for k in CLIP_ORDER}
        grads = {k: (grad_scale * rng.standard_normal((5, 5))).astype(dt) for k in CLIP_ORDER if k not in FROZEN}
        return {"params": params, "grads": grads, "max_l2_norm": max_norm}
    return make


def clip_ref(m, i):
    clipped, _ = m["optim"].clip_grad_norm(i["grads"], i["max_l2_norm"])
    return tuple(clipped[k] for k in CLIP_ORDER if k not in FROZEN)


def clip_per_tensor(i):
    """Each gradient scaled by its OWN norm: every tensor ends at norm <= max, the whole set does not."""
    out = []
    for k in CLIP_ORDER:
        if k in FROZEN:
            continue
        g = i["grads"][k]
        norm = float(np.sqrt(np.sum(g.astype(np.float64) ** 2)))
        coef = min(1.0, i["max_l2_norm"] / (norm + 1e-6))
        out.append((g * coef).astype(g.dtype))
    return tuple(out)


# ---------------------------------------------------------------- AdamW

ADAMW_ORDER = ("w0", "w1")  # matrices only: torch decays every parameter, our dict AdamW matrices (ndim >= 2)


def adamw_inputs(steps, lr, wd, betas, eps, grad_scale=1.0):
    def make(rng, dt):
        shapes = {"w0": (3, 4), "w1": (2, 3)}
        return {"params": {k: rng.standard_normal(s).astype(dt) for k, s in shapes.items()},
                # Gradients that drift (a mean plus noise), so the moments do real work over the steps.
                "grads": {k: (grad_scale * (0.5 + rng.standard_normal((steps,) + s))).astype(dt)
                          for k, s in shapes.items()},
                "lr": lr, "weight_decay": wd, "betas": list(betas), "eps": eps}
    return make


def adamw_ref(m, i):
    """Each backend's dict AdamW (torch_ref: torch.optim.AdamW itself), stepped once per gradient."""
    params = {k: i["params"][k] for k in ADAMW_ORDER}
    state = m["optim"].adamw_init(params)
    steps = int(i["grads"][ADAMW_ORDER[0]].shape[0])
    for t in range(steps):
        params, state = m["optim"].adamw_step(params, {k: i["grads"][k][t] for k in ADAMW_ORDER}, state, i["lr"],
                                              tuple(i["betas"]), i["eps"], i["weight_decay"])
    return tuple(params[k] for k in ADAMW_ORDER)


# ---------------------------------------------------------------- the cosine schedule

SCHEDULE_ARGS = ["it", "max_learning_rate", "min_learning_rate", "warmup_iters", "cosine_cycle_iters"]


def schedule_inputs(max_lr, min_lr, warmup, cycle, past=4):
    def make(rng, dt):
        return {"its": np.arange(cycle + past + 1), "it": 0, "max_learning_rate": max_lr, "min_learning_rate": min_lr,
                "warmup_iters": warmup, "cosine_cycle_iters": cycle}
    return make


def schedule_ref(m, i):
    return m["schedule"].lr_cosine_schedule(i["its"], i["max_learning_rate"], i["min_learning_rate"],
                                            i["warmup_iters"], i["cosine_cycle_iters"])


def schedule_variant(plus_one=False, floor="min", cosine_to_zero=False):
    """The schedule with a different warmup ((it + 1) / Tw), no floor after the cycle (0), or a
    cosine that decays to 0 instead of to min_lr."""
    def run(i):
        it = i["its"].astype(np.float64)
        hi, lo, tw, tc = i["max_learning_rate"], i["min_learning_rate"], i["warmup_iters"], i["cosine_cycle_iters"]
        bottom = 0.0 if cosine_to_zero else lo
        warm = (it + 1 if plus_one else it) / tw * hi
        cos = bottom + 0.5 * (1 + np.cos(np.pi * (it - tw) / (tc - tw))) * (hi - bottom)
        after = 0.0 if floor == "zero" else lo
        return np.where(it < tw, warm, np.where(it <= tc, cos, after))
    return run


# ---------------------------------------------------------------- get_batch, judged by its statistics

def batch_inputs(n, batch_size, context_length):
    def make(rng, dt):
        return {"dataset": np.arange(n, dtype=np.int64), "batch_size": batch_size,
                "context_length": context_length, "device": "cpu"}
    return make


def batch_ref(draws):
    def ref(m, i):
        """What a right sampler returns, drawn by training.data.get_batch (uniform starts 0 .. N - T - 1)."""
        from triptych.training.data import get_batch
        xs, ys = zip(*(get_batch(i["dataset"], i["batch_size"], i["context_length"], seed=0, step=s)
                       for s in range(draws)))
        return np.concatenate(xs), np.concatenate(ys)
    return ref


def _grade_batches(case, inputs, got, refs):
    """Shapes; y = x shifted by one; contiguous windows; every start 0 .. N - T - 1 drawn (the last
    included), none outside, each within 5 standard deviations of its expected count (the course's
    own test uses the same 5-sigma band)."""
    x, y = got
    n, bs, ctx = len(inputs["dataset"]), inputs["batch_size"], inputs["context_length"]
    want = refs["numpy"][0].shape
    if x.shape != want or y.shape != want:
        return dict(verdict="wrong shape", message=f"x {x.shape[1:]} and y {y.shape[1:]} per batch, expected "
                                                   f"({bs}, {ctx}) each (batch_size, context_length)")
    if x.dtype.kind not in "iu" or y.dtype.kind not in "iu":
        return dict(verdict="wrong dtype", message=f"x {x.dtype}, y {y.dtype}: token ids must stay integers "
                                                   f"(torch.long)")
    if not np.array_equal(x[:, 1:], x[:, :-1] + 1):
        return dict(verdict="FAIL", message="a window of x is not contiguous: x must be dataset[i:i + context_length]")
    if not np.array_equal(y, x + 1):
        return dict(verdict="FAIL", message="y is not x shifted by one token: y must be dataset[i + 1:i + 1 + "
                                            "context_length]")
    starts = x[:, 0]
    last = n - ctx - 1
    counts = np.bincount(starts, minlength=n)
    if starts.min() < 0 or starts.max() > last:
        return dict(verdict="FAIL", message=f"start {int(starts.max())} drawn: the last valid start is "
                                            f"len(dataset) - context_length - 1 = {last} (its target is the last token)")
    draws, k = len(starts), last + 1
    expected = draws / k
    sigma = math.sqrt(draws * (1 / k) * (1 - 1 / k))
    never = np.flatnonzero(counts[:k] == 0)
    if counts[last] == 0 and list(never) == [last]:
        return dict(verdict="FAIL", mistake="cs336_get_batch_misses_last_window",
                    message=f"start {last} never drawn in {draws} windows (expected about {expected:.0f} times)",
                    diagnosis="your sampler never draws the last window, start len(dataset) - context_length - 1",
                    explanation=f"randint(0, len - context_length - 1) excludes its upper end; starts 0 .. {last} "
                                f"are all valid (the last window's target is the dataset's last token)",
                    fix_at=locate(("triptych.training.data", "get_batch", "rng.integers")))
    if len(never):
        return dict(verdict="FAIL", message=f"{len(never)} of the {k} valid starts never drawn in {draws} windows "
                                            f"(first: {int(never[0])}); every start must be reachable")
    worst = int(np.argmax(np.abs(counts[:k] - expected)))
    if abs(counts[worst] - expected) > 5 * sigma:
        return dict(verdict="FAIL", message=f"start {worst} drawn {int(counts[worst])} times, expected "
                                            f"{expected:.0f} +- {5 * sigma:.0f} (5 sigma): the starts are not uniform")
    return dict(ok=True, verdict="pass", max_abs_err=0.0,
                message=f"{draws} windows: contiguous, y = x + 1, all {k} starts drawn, counts within 5 sigma")


def grade_batches(case, inputs, got, refs):
    """_grade_batches's verdict, without the tolerance and L2 columns: these outputs are packed ids and bytes."""
    return {**_grade_batches(case, inputs, got, refs), **NO_NUMBERS}
