"""Building blocks with the numpy_impl signature of the same name, forward and backward.

A user's backward ("maths without autograd") is judged against torch autograd and jax.vjp on the
same inputs, with the gradient row of the tolerance table.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.crosscheck.spec import Case, Exercise, Variant

GROUP = "blocks"
TITLE = "Building blocks: softmax, layer norm, GELU, cross-entropy, forward and backward"
ORDER = 50

GELU_C = math.sqrt(2.0 / math.pi)


def _x(shape, scale=1.0):
    return lambda rng, dt: {"x": (rng.standard_normal(shape) * scale).astype(dt)}


def _np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _ln_inputs(shape):
    def make(rng, dt):
        d = shape[-1]
        return {"x": (rng.standard_normal(shape) * 2 + 0.5).astype(dt),
                "weight": (1 + 0.1 * rng.standard_normal(d)).astype(dt),
                "bias": (0.1 * rng.standard_normal(d)).astype(dt), "eps": 1e-5}
    return make


def _ln(i, ddof=0, eps_outside=False):
    x = i["x"]
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, ddof=ddof, keepdims=True)
    std = np.sqrt(var) + i["eps"] if eps_outside else np.sqrt(var + i["eps"])
    return (x - mu) / std * i["weight"] + i["bias"]


def _gelu_erf(x):
    from math import erf
    return 0.5 * x * (1.0 + np.vectorize(erf)(x / math.sqrt(2.0)))


def _ce_inputs(n, v, ignore=0):
    def make(rng, dt):
        targets = rng.integers(0, v, size=n)
        targets[:ignore] = -100
        # ignore_index travels only where a position is ignored: a cross_entropy(inputs, targets)
        # without it (CS336's) is graded on the other cases and told why this one is not.
        return {"logits": (rng.standard_normal((n, v)) * 3).astype(dt), "targets": targets.astype(np.int64),
                "ignore_index": -100 if ignore else None}
    return make


def _ce_terms(i):
    lg, t = i["logits"].astype(np.float64), i["targets"]
    keep = t != -100
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    nll = lse - lg[np.arange(len(t)), np.where(keep, t, 0)]
    return nll, keep, i["logits"].dtype


def _softmax_grad_inputs(shape):
    def make(rng, dt):
        x = (rng.standard_normal(shape) * 2).astype(dt)
        return {"x": x, "y": _np_softmax(x.astype(np.float64)).astype(dt),
                "dy": rng.standard_normal(shape).astype(dt)}
    return make


def _softmax_grad_ref(m, i):
    """The gradient of softmax at x along dy, by each backend's own differentiation."""
    import torch
    x, dy = i["x"], i["dy"]
    if isinstance(x, torch.Tensor):
        x = x.clone().requires_grad_(True)
        return torch.autograd.grad(torch.softmax(x, -1), x, dy)[0]
    if type(x).__module__.startswith("jax"):
        import jax
        return jax.vjp(lambda z: jax.nn.softmax(z, axis=-1), x)[1](dy)[0]
    return m["attention"].softmax_backward(dy, i["y"])


def _fix(module, fn, text):
    return (module, fn, text)


EXERCISES = [
    Exercise(
        "softmax", GROUP, "softmax(x, axis=-1)", "x any shape -> same, summing to 1 along axis",
        "vs each backend's softmax, logits up to 1e3 included (exp overflows without the max subtraction)",
        target={"name": "softmax", "args": ["x"], "defaults": {"axis": -1}},
        reference=lambda m, i: m["attention"].softmax(i["x"]),
        cases=(Case("(4, 7)", _x((4, 7))), Case("(2, 3, 5, 6) float32", _x((2, 3, 5, 6)), dtype="float32"),
               Case("logits ~ 1e3", _x((3, 8), scale=1e3))),
        variants=(Variant("softmax_wrong_axis", "the softmax taken over the first axis instead of the last",
                          "axis=-1 normalises each row; axis=0 normalises columns",
                          lambda i: _np_softmax(i["x"], axis=0), _fix("numpy_impl.attention", "softmax", "np.max")),
                  Variant("softmax_no_max_shift", "exp(x) / sum(exp(x)) WITHOUT subtracting the row max",
                          "exp(1000) overflows to inf and inf/inf is NaN; subtracting the max cancels in the ratio",
                          lambda i: _naive_softmax(i["x"]), _fix("numpy_impl.attention", "softmax", "np.max"))),
    ),
    Exercise(
        "layer_norm", GROUP, "layer_norm(x, weight, bias, eps=1e-5)", "x (..., D), weight (D,), bias (D,) -> (..., D)",
        "vs torch's F.layer_norm (and NumPy's, JAX's): biased variance, eps inside the square root",
        target={"name": "layer_norm", "args": ["x", "weight", "bias"], "kwargs": ["eps"]},
        reference=lambda m, i: m["layers"].layer_norm(i["x"], i["weight"], i["bias"], i["eps"]),
        cases=(Case("(2, 3, 8)", _ln_inputs((2, 3, 8))), Case("(4, 64) float32", _ln_inputs((4, 64)), dtype="float32")),
        variants=(Variant("ln_unbiased_variance", "LayerNorm with the UNBIASED variance (divided by D - 1)",
                          "LayerNorm normalises by the population variance (divide by D), as torch does",
                          lambda i: _ln(i, ddof=1), _fix("numpy_impl.layers", "layer_norm_forward", "var")),
                  Variant("ln_eps_outside_sqrt", "LayerNorm with eps added OUTSIDE the square root",
                          "torch computes (x - mean) / sqrt(var + eps); sqrt(var) + eps differs for small variances",
                          lambda i: _ln(i, eps_outside=True), _fix("numpy_impl.layers", "layer_norm_forward", "eps"))),
    ),
    Exercise(
        "gelu", GROUP, "gelu(x)", "x any shape -> same; the tanh approximation GPT-2 uses",
        "vs torch's F.gelu(x, approximate='tanh') (and NumPy's, JAX's)",
        target={"name": "gelu", "args": ["x"]},
        reference=lambda m, i: m["layers"].gelu(i["x"]),
        cases=(Case("(3, 16), values up to +-6", _x((3, 16), scale=3.0)),
               Case("(2, 4, 8) float32", _x((2, 4, 8), scale=2.0), dtype="float32")),
        variants=(Variant("gelu_erf_not_tanh", "the exact erf GELU where the tanh approximation is expected",
                          "GPT-2's GELU is 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); the erf form differs "
                          "by up to ~5e-4", lambda i: _gelu_erf(i["x"]), _fix("numpy_impl.layers", "gelu_forward", "0.044715")),),
    ),
    Exercise(
        "cross_entropy", GROUP, "cross_entropy(logits, targets, ignore_index=-100)",
        "logits (N, V), targets (N,) ints -> loss, a 0-d array (mean over targets that are not ignore_index)",
        "vs torch's F.cross_entropy (mean reduction, ignore_index=-100) and NumPy's, JAX's",
        target={"name": "cross_entropy", "args": ["logits", "targets"], "kwargs": ["ignore_index"]},
        reference=lambda m, i: m["losses"].cross_entropy(i["logits"], i["targets"]),
        cases=(Case("8 positions, vocab 5", _ce_inputs(8, 5)),
               Case("16 positions, 3 ignored (float32)", _ce_inputs(16, 11, ignore=3), dtype="float32")),
        variants=(Variant("ce_sum_not_mean", "the SUM of the per-position losses instead of their mean",
                          "the loss is averaged over the kept positions, so it does not grow with the batch",
                          lambda i: _ce_reduce(i, "sum"), _fix("numpy_impl.losses", "cross_entropy_forward", "n_kept")),
                  Variant("ce_divided_by_all", "the kept losses summed but divided by ALL positions, ignored ones included",
                          "positions whose target is ignore_index (-100, padding) take no part in the loss, "
                          "nor in the count it is averaged over",
                          lambda i: _ce_reduce(i, "all"), _fix("numpy_impl.losses", "cross_entropy_forward", "keep"))),
    ),
    Exercise(
        "softmax_backward", GROUP, "softmax_backward(dy, y, axis=-1)",
        "dy, y = softmax(x) (any shape, same) -> dx (same): the vector-Jacobian product",
        "vs torch autograd and jax.vjp of softmax at the same x, along dy (gradient tolerance)",
        target={"name": "softmax_backward", "args": ["dy", "y"]},
        reference=_softmax_grad_ref, tol_kind="grad",
        cases=(Case("(4, 6)", _softmax_grad_inputs((4, 6))),
               Case("(2, 3, 5) float32", _softmax_grad_inputs((2, 3, 5)), dtype="float32")),
        variants=(Variant("softmax_bwd_diagonal_only", "y * dy: only the Jacobian's diagonal, the -y y^T term dropped",
                          "dy_i/dx_j = y_i (delta_ij - y_j): every output depends on every input, so "
                          "dx = y * (dy - sum(dy * y))", lambda i: i["y"] * i["dy"],
                          _fix("numpy_impl.attention", "softmax_backward", "np.sum(dy * y")),),
    ),
]


def _naive_softmax(x):
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x)
        return e / e.sum(-1, keepdims=True)


def _ce_reduce(i, how):
    nll, keep, dtype = _ce_terms(i)
    if how == "sum":
        return np.asarray(np.sum(nll * keep), dtype=dtype)
    return np.asarray(np.sum(nll * keep) / len(keep), dtype=dtype)  # "all": N in the denominator
