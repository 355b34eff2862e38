"""Building blocks, training side: the backward passes of layer norm, GELU and cross-entropy, LoRA
(forward, backward, merge, unmerge) and one AdamW step.

A user's *_backward is judged against the gradient torch autograd and jax.vjp take of each
backend's own forward on the same inputs and upstream gradient (the NumPy column is numpy_impl's
hand-written backward), with the gradient row of the tolerance table.

Signatures: numpy_impl's backward takes the cache its *_forward returned; a cache (a tuple, or a
dict holding None) cannot travel to the sandboxed child, so here a backward takes the upstream
gradient followed by the forward's own inputs (as softmax_backward and
scaled_dot_product_attention_backward already do), and returns a tuple of arrays in numpy_impl's
order. adamw_step is the single-tensor step (numpy_impl's works on dicts of them).
"""
from __future__ import annotations

import math

import numpy as np

from triptych.crosscheck.exercises._grad import autodiff, on_numpy
from triptych.crosscheck.exercises._lora_adamw import (  # LoRA and AdamW: inputs, references, variants
    _lora_inputs, _lora_fwd, _lora_ref, _lorab_ref, _lorab, _merge, _merge_inputs, _adamw_inputs, _adamw_ref,
    ADAMW_VARIANTS,
)
from triptych.crosscheck.spec import Case, Exercise, Variant

GROUP = "blocks-backward"
TITLE = "Building blocks, backward: layer norm, GELU, cross-entropy, LoRA, AdamW"
ORDER = 54

GELU_C = math.sqrt(2.0 / math.pi)


def _fix(module, fn, text):
    return (module, fn, text)


# ---------------------------------------------------------------- layer norm backward

def _lnb_inputs(shape):
    def make(rng, dt):
        d = shape[-1]
        return {"dout": rng.standard_normal(shape).astype(dt), "x": (rng.standard_normal(shape) * 2 + 0.5).astype(dt),
                "weight": (1 + 0.1 * rng.standard_normal(d)).astype(dt),
                "bias": (0.1 * rng.standard_normal(d)).astype(dt), "eps": 1e-5}
    return make


def _lnb_ref(m, i):
    if on_numpy(i, "x"):
        _, cache = m["layers"].layer_norm_forward(i["x"], i["weight"], i["bias"], i["eps"])
        return m["layers"].layer_norm_backward(i["dout"], cache)
    return autodiff(m, i, lambda m, j: m["layers"].layer_norm(j["x"], j["weight"], j["bias"], j["eps"]),
                     ("x", "weight", "bias"), "dout")


def _lnb(i, ddof=0, terms="both", swap=False):
    """The layer-norm backward as written with a mistake: ddof=1 normalises by the unbiased
    variance (torch's x.var() default); terms "none" / "mean" drop the coupling terms."""
    x, dout = i["x"], i["dout"]
    xc = x - x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(x.var(-1, ddof=ddof, keepdims=True) + i["eps"])
    xhat, lead = xc * rstd, tuple(range(x.ndim - 1))
    dxhat = dout * i["weight"]
    dx = dxhat
    if terms in ("mean", "both"):
        dx = dx - dxhat.mean(-1, keepdims=True)
    if terms == "both":
        dx = dx - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    dw, db = (dout * xhat).sum(lead), dout.sum(lead)
    return (dx * rstd, db, dw) if swap else (dx * rstd, dw, db)


# ---------------------------------------------------------------- GELU backward

def _gelub_inputs(shape, scale):
    return lambda rng, dt: {"dout": rng.standard_normal(shape).astype(dt),
                            "x": (rng.standard_normal(shape) * scale).astype(dt)}


def _gelub_ref(m, i):
    if on_numpy(i, "x"):
        _, cache = m["layers"].gelu_forward(i["x"])
        return m["layers"].gelu_backward(i["dout"], cache)
    return autodiff(m, i, lambda m, j: m["layers"].gelu(j["x"]), ("x",), "dout")


def _gelub(i, form="tanh", product_rule=True, cubic=True):
    x = i["x"].astype(np.float64)
    if form == "erf":  # d/dx x Phi(x) = Phi(x) + x phi(x)
        phi = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        grad = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2))) + x * phi
    else:
        t = np.tanh(GELU_C * (x + 0.044715 * x ** 3))
        du = GELU_C * (1 + (3 * 0.044715 * x * x if cubic else 0.0))
        grad = 0.5 * (1 + t) + (0.5 * x * (1 - t * t) * du if product_rule else 0.0)
    return (i["dout"] * grad).astype(i["x"].dtype)


# ---------------------------------------------------------------- cross-entropy backward

def _ceb_inputs(shape, v, ignore=0, dloss=1.0):
    def make(rng, dt):
        targets = rng.integers(0, v, size=shape)
        targets.reshape(-1)[:ignore] = -100
        return {"dloss": dloss, "logits": (rng.standard_normal(shape + (v,)) * 3).astype(dt),
                "targets": targets.astype(np.int64)}
    return make


def _ceb_ref(m, i):
    if on_numpy(i, "logits"):
        _, cache = m["losses"].cross_entropy_forward(i["logits"], i["targets"])
        return m["losses"].cross_entropy_backward(i["dloss"], cache)
    return autodiff(m, i, lambda m, j: m["losses"].cross_entropy(j["logits"], j["targets"]), ("logits",), "dloss")


def _ceb(i, divide_by="kept", use_dloss=True):
    lg, t = i["logits"].astype(np.float64), i["targets"]
    keep = t != -100
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    p -= np.eye(lg.shape[-1])[np.where(keep, t, 0)]  # softmax - onehot(target)
    n = {"kept": max(int(keep.sum()), 1), "all": keep.size, "none": 1}[divide_by]
    return (p * keep[..., None] * ((i["dloss"] if use_dloss else 1.0) / n)).astype(i["logits"].dtype)


# ---------------------------------------------------------------- the catalogue

def _v(name, says, why, compute, fix_at=None):
    return Variant(name, says, why, compute, fix_at)


_LN = "numpy_impl.layers"
_LORA = "numpy_impl.lora"

EXERCISES = [
    Exercise(
        "layer_norm_backward", GROUP, "layer_norm_backward(dout, x, weight, bias, eps=1e-5)",
        "dout, x (..., D), weight, bias (D,) -> (dx (..., D), dweight (D,), dbias (D,))",
        "vs torch autograd and jax.vjp of F.layer_norm at the same x, weight, bias, along dout (gradient tolerance)",
        target={"name": "layer_norm_backward", "args": ["dout", "x", "weight", "bias"], "kwargs": ["eps"]},
        reference=_lnb_ref, tol_kind="grad", outputs=("dx", "dweight", "dbias"),
        notes="numpy_impl.layers.layer_norm_backward(dout, cache) takes the cache layer_norm_forward returns; "
              "here you get the forward's inputs instead and return the same (dx, dweight, dbias).",
        cases=(Case("course-sized (1, 3, 8)", _lnb_inputs((1, 3, 8))),
               Case("(2, 5, 32)", _lnb_inputs((2, 5, 32)), seed=1),
               Case("(4, 16, 64) float32", _lnb_inputs((4, 16, 64)), dtype="float32", seed=2)),
        variants=(
            _v("lnb_no_mean_terms", "dx = dout * weight * rstd: mean and variance treated as constants",
               "the mean and variance are functions of x, so dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))",
               lambda i: _lnb(i, terms="none"), _fix(_LN, "layer_norm_backward", "dxhat.mean")),
            _v("lnb_no_variance_term", "dx WITHOUT the - xhat * mean(dxhat * xhat) term (the mean's term kept)",
               "the variance depends on x too; its path gives the xhat * mean(dxhat * xhat) term",
               lambda i: _lnb(i, terms="mean"), _fix(_LN, "layer_norm_backward", "np.mean(dxhat * xhat")),
            _v("lnb_unbiased_variance", "the backward computed with the UNBIASED variance (divided by D - 1)",
               "LayerNorm normalises by the population variance (divide by D); torch's x.var() is unbiased by default",
               lambda i: _lnb(i, ddof=1), _fix(_LN, "layer_norm_forward", "np.mean(np.square")),
            _v("lnb_dweight_dbias_swapped", "(dx, dbias, dweight): the two parameter gradients swapped",
               "out = xhat * weight + bias, so dweight = sum(dout * xhat) and dbias = sum(dout)",
               lambda i: _lnb(i, swap=True), _fix(_LN, "layer_norm_backward", "dweight = "))),
    ),
    Exercise(
        "gelu_backward", GROUP, "gelu_backward(dout, x)", "dout, x (any shape, same) -> dx (same); tanh-form GELU",
        "vs torch autograd and jax.vjp of the tanh GELU (F.gelu(approximate='tanh')) at x, along dout",
        target={"name": "gelu_backward", "args": ["dout", "x"]}, reference=_gelub_ref, tol_kind="grad",
        notes="numpy_impl.layers.gelu_backward(dout, cache) takes gelu_forward's cache; here you get x itself.",
        cases=(Case("(3, 16), x up to +-6", _gelub_inputs((3, 16), 3.0)),
               Case("(2, 4, 8) float32", _gelub_inputs((2, 4, 8), 2.0), dtype="float32", seed=1)),
        variants=(
            _v("gelub_erf_not_tanh", "the derivative of the exact erf GELU, Phi(x) + x phi(x), not of the tanh form",
               "the forward is GPT-2's tanh approximation, so its backward differentiates that formula",
               lambda i: _gelub(i, form="erf"), _fix(_LN, "gelu_backward", "GELU_C")),
            _v("gelub_no_product_rule", "0.5 (1 + tanh(u)) only: the x * d tanh(u)/dx half of the product rule dropped",
               "y = 0.5 x (1 + tanh(u(x))) has x in both factors: dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x)",
               lambda i: _gelub(i, product_rule=False), _fix(_LN, "gelu_backward", "dt *= x")),
            _v("gelub_du_without_cubic", "du/dx = sqrt(2/pi): the 3 * 0.044715 x^2 of the cubic term dropped",
               "u = sqrt(2/pi) (x + 0.044715 x^3), so du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)",
               lambda i: _gelub(i, cubic=False), _fix(_LN, "gelu_backward", "3 * 0.044715"))),
    ),
    Exercise(
        "cross_entropy_backward", GROUP, "cross_entropy_backward(dloss, logits, targets, ignore_index=-100)",
        "dloss a number, logits (..., V), targets (...) ints -> dlogits (..., V)",
        "vs torch autograd and jax.vjp of the mean cross-entropy (ignore_index=-100) at logits, along dloss",
        target={"name": "cross_entropy_backward", "args": ["dloss", "logits", "targets"]},
        reference=_ceb_ref, tol_kind="grad",
        notes="numpy_impl.losses.cross_entropy_backward(dloss, cache) takes cross_entropy_forward's cache; here you "
              "get the forward's inputs. Ignored positions get zero gradient.",
        cases=(Case("8 positions, vocab 5, dloss 1", _ceb_inputs((8,), 5)),
               Case("16 positions, 3 ignored, dloss 0.5 (float32)", _ceb_inputs((16,), 11, ignore=3, dloss=0.5),
                    dtype="float32", seed=1),
               Case("(2, 6) positions, vocab 7, 2 ignored, dloss 2", _ceb_inputs((2, 6), 7, ignore=2, dloss=2.0), seed=2)),
        variants=(
            _v("ceb_no_mean", "(softmax - onehot) * dloss WITHOUT the 1/N of the mean",
               "the loss is the mean over kept positions, so every row's gradient carries 1/n_kept",
               lambda i: _ceb(i, divide_by="none"), _fix("numpy_impl.losses", "cross_entropy_backward", "n_kept")),
            _v("ceb_divided_by_all", "the gradient divided by ALL positions, ignored ones included",
               "ignored positions are not in the mean the loss takes, nor in its count",
               lambda i: _ceb(i, divide_by="all"), _fix("numpy_impl.losses", "cross_entropy_backward", "keep")),
            _v("ceb_ignores_dloss", "the gradient of the loss itself, not multiplied by the upstream dloss",
               "the chain rule: d(upstream)/dlogits = dloss * dloss/dlogits",
               lambda i: _ceb(i, use_dloss=False), _fix("numpy_impl.losses", "cross_entropy_backward", "float(dloss)"))),
    ),
    Exercise(
        "lora_linear", GROUP, "lora_linear(x, w, b, lora, alpha, use_rslora=False, dropout_mask=None)",
        "x (..., d_in), w (d_out, d_in), b (d_out,) or None, lora {'lora_A': (r, d_in), 'lora_B': (d_out, r)} "
        "-> (..., d_out)",
        "vs peft's LoRA Linear (torch), NumPy's and JAX's lora_linear; B != 0 so the adapter is not a no-op",
        target={"name": "lora_linear", "args": ["x", "w", "b", "lora", "alpha"], "kwargs": ["use_rslora", "dropout_mask"]},
        reference=_lora_ref,
        cases=(Case("course-sized (1, 3, 8) -> 6, r 2", _lora_inputs((1, 3), 8, 6, 2, 4.0)),
               Case("(2, 5, 16) -> 12, r 4, no bias (float32)", _lora_inputs((2, 5), 16, 12, 4, 8.0, bias=False),
                    dtype="float32", seed=1),
               Case("dropout mask on the LoRA branch", _lora_inputs((2, 4), 8, 8, 2, 16.0, dropout=True), seed=2),
               Case("rsLoRA: alpha / sqrt(r)", _lora_inputs((3,), 16, 8, 4, 8.0, rslora=True), seed=3)),
        variants=(
            _v("lora_no_scaling", "x W^T + b + (x A^T) B^T: the alpha / r scale left out",
               "the update is scaled by alpha / r so that changing r does not change its size",
               lambda i: _lora_fwd(i, "one"), _fix(_LORA, "lora_scaling", "alpha / r")),
            _v("lora_scale_inverted", "the adapter scaled by r / alpha instead of alpha / r", "s = alpha / r",
               lambda i: _lora_fwd(i, "inverted"), _fix(_LORA, "lora_scaling", "alpha / r")),
            _v("lora_rslora_ignored", "alpha / r where use_rslora asks for alpha / sqrt(r)",
               "rsLoRA (Kalajdzievski, 2023) scales by alpha / sqrt(r)",
               lambda i: _lora_fwd(i, "plain"), _fix(_LORA, "lora_scaling", "math.sqrt(r)")),
            _v("lora_dropout_on_base", "dropout applied to the input of the frozen path too",
               "LoRA's dropout touches only the adapter's branch; the frozen layer sees x itself",
               lambda i: _lora_fwd(i, mask_base=True), _fix(_LORA, "lora_linear_forward", "(1) dropout"))),
    ),
    Exercise(
        "lora_linear_backward", GROUP, "lora_linear_backward(dy, x, w, b, lora, alpha, use_rslora=False, dropout_mask=None)",
        "dy (..., d_out) and lora_linear's inputs -> (d_lora_A (r, d_in), d_lora_B (d_out, r), dx (..., d_in))",
        "vs torch autograd through peft's LoRA Linear and jax.vjp of JAX's lora_linear, along dy (W, b frozen)",
        target={"name": "lora_linear_backward", "args": ["dy", "x", "w", "b", "lora", "alpha"],
                "kwargs": ["use_rslora", "dropout_mask"]},
        reference=_lorab_ref, tol_kind="grad", outputs=("d_lora_A", "d_lora_B", "dx"),
        notes="numpy_impl.lora.lora_linear_backward(dy, cache) returns a dict {lora_A, lora_B, x}; return the same "
              "three arrays as a tuple. W and b are frozen: no gradient for them.",
        cases=(Case("course-sized (1, 3, 8) -> 6, r 2", _lora_inputs((1, 3), 8, 6, 2, 4.0)),
               Case("(2, 5, 16) -> 12, r 4 (float32)", _lora_inputs((2, 5), 16, 12, 4, 8.0), dtype="float32", seed=1),
               Case("dropout mask on the LoRA branch", _lora_inputs((2, 4), 8, 8, 2, 16.0, dropout=True), seed=2)),
        variants=(
            _v("lorab_no_scaling", "the gradients WITHOUT the alpha / r scale",
               "y += s (x A^T) B^T, so dA, dB and the branch's share of dx all carry s = alpha / r",
               lambda i: _lorab(i, "one"), _fix(_LORA, "lora_linear_backward", "d_b = s")),
            _v("lorab_dx_base_only", "dx = dy W: the LoRA branch's path to x left out",
               "x feeds both the frozen layer and the adapter, so dx sums both paths",
               lambda i: _lorab(i, dx_base_only=True), _fix(_LORA, "lora_linear_backward", "dx = dy @ w")),
            _v("lorab_dropout_ignored", "the gradients of the branch WITHOUT the dropout mask",
               "the adapter saw dropout(x): dA uses the masked input and dx's branch share is masked again",
               lambda i: _lorab(i, ignore_mask=True), _fix(_LORA, "lora_linear_backward", "dxd * m"))),
    ),
    Exercise(
        "merge_lora", GROUP, "merge_lora(w, lora, alpha, use_rslora=False)", "w (d_out, d_in) -> W + (alpha / r) B A",
        "vs peft's layer.merge() (torch), NumPy's and JAX's merge_lora; one case with B = 0, where the merged weight is W",
        target={"name": "merge_lora", "args": ["w", "lora", "alpha"], "kwargs": ["use_rslora"]},
        reference=lambda m, i: m["lora"].merge_lora(i["w"], i["lora"], i["alpha"], i["use_rslora"]),
        cases=(Case("a fresh adapter (B = 0): W unchanged", _merge_inputs(8, 6, 2, 4.0, b_zero=True)),
               Case("(12, 16), r 4", _merge_inputs(16, 12, 4, 8.0), seed=1),
               Case("rsLoRA (float32)", _merge_inputs(16, 8, 4, 8.0, rslora=True), dtype="float32", seed=2)),
        variants=(
            _v("merge_no_scaling", "W + B A: the alpha / r scale left out", "the merged layer must compute what the "
               "adapted one did, whose branch is scaled by alpha / r", lambda i: _merge(i, "one"),
               _fix(_LORA, "lora_delta", "lora_scaling")),
            _v("merge_subtracts", "W - s B A: the delta subtracted (that is unmerge)", "merging adds the delta",
               lambda i: _merge(i, sign=-1.0), _fix(_LORA, "merge_lora", "w + lora_delta")),
            _v("merge_rslora_ignored", "alpha / r where use_rslora asks for alpha / sqrt(r)",
               "the merged weight carries the same scale the forward used", lambda i: _merge(i, "plain"),
               _fix(_LORA, "lora_scaling", "math.sqrt(r)"))),
    ),
    Exercise(
        "unmerge_lora", GROUP, "unmerge_lora(w_merged, lora, alpha, use_rslora=False)",
        "w_merged (d_out, d_in) -> W' - (alpha / r) B A", "vs peft's layer.unmerge() (torch), NumPy's and JAX's unmerge_lora",
        target={"name": "unmerge_lora", "args": ["w_merged", "lora", "alpha"], "kwargs": ["use_rslora"]},
        reference=lambda m, i: m["lora"].unmerge_lora(i["w_merged"], i["lora"], i["alpha"], i["use_rslora"]),
        cases=(Case("(6, 8), r 2", _merge_inputs(8, 6, 2, 4.0, merged=True)),
               Case("rsLoRA (float32)", _merge_inputs(16, 8, 4, 8.0, rslora=True, merged=True), dtype="float32", seed=1)),
        variants=(
            _v("unmerge_no_scaling", "W' - B A: the alpha / r scale left out", "unmerge removes exactly the delta "
               "merge added, s B A", lambda i: _merge(i, "one", -1.0, "w_merged"), _fix(_LORA, "lora_delta", "lora_scaling")),
            _v("unmerge_adds", "W' + s B A: the delta added a second time", "unmerging subtracts the delta",
               lambda i: _merge(i, sign=1.0, key="w_merged"), _fix(_LORA, "unmerge_lora", "w_merged - lora_delta"))),
    ),
    Exercise(
        "adamw_step", GROUP, "adamw_step(p, g, m, v, step, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)",
        "p, g, m, v (same shape), step = this step's number (1 for the first) -> (new p, new m, new v)",
        "vs torch.optim.AdamW (one step from the same moments), NumPy's and JAX's adamw_step",
        target={"name": "adamw_step", "args": ["p", "g", "m", "v", "step", "lr"], "kwargs": ["betas", "eps", "weight_decay"]},
        reference=_adamw_ref, outputs=("p", "m", "v"),
        notes="numpy_impl.optim.adamw_step steps dicts of parameters (decaying matrices only); this is that step "
              "for one matrix. Return fresh arrays: the inputs must not change. Accepted and named: the decay "
              "after the Adam step and the efficient-epsilon step size (the CS336 handout's forms).",
        cases=(Case("first step (m = v = 0), (8, 6)", _adamw_inputs((8, 6), 1, 1e-2, (0.9, 0.95), 0.1, fresh=True)),
               Case("step 7, (16, 12), betas (0.9, 0.999)", _adamw_inputs((16, 12), 7, 3e-3, (0.9, 0.999), 0.05, False),
                    seed=1),
               Case("step 3, (32, 16) float32", _adamw_inputs((32, 16), 3, 1e-2, (0.9, 0.95), 0.1, False),
                    dtype="float32", seed=2)),
        variants=ADAMW_VARIANTS,
    ),
]
