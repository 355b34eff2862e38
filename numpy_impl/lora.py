"""LoRA (low-rank adaptation) in plain NumPy: forward, merge/unmerge, and the backward pass for the
two small matrices with the base layer frozen.

A frozen linear layer W (d_out, d_in), b (d_out,) gets a trainable low-rank change:

    y = x W^T + b + s * (dropout(x) A^T) B^T        A (r, d_in), B (d_out, r)
    s = alpha / r            (or alpha / sqrt(r) with rsLoRA, which keeps the update's size
                              independent of the rank)

Only r * (d_in + d_out) numbers are trained instead of d_in * d_out. Because (x A^T) B^T = x (B A)^T,
the adapter can be folded into the weight after training: merge W' = W + s B A (no extra cost at
inference), and unmerge subtracts the same delta again. Dropout touches the LoRA branch only.

Parameters are plain dicts with peft's names: {"lora_A": (r, d_in), "lora_B": (d_out, r)}. Inits
(peft's `init_lora_weights`):
    "default"  (peft True):       A ~ U(+-1/sqrt(d_in)) (kaiming_uniform, a=sqrt(5)), B = 0 -> starts as a no-op
    "gaussian" (peft "gaussian"): A ~ N(0, std=1/r), B = 0
    "random"   (peft False):      A ~ U(+-1/sqrt(d_in)), B ~ U(+-1/sqrt(r)) (nn.Linear's own init; tests use
                                  it so that B != 0 and a comparison cannot pass trivially)

LoRA on attention: `lora_multihead_attention` adds adapters to any of the projections q, k, v, o of
numpy_impl.multihead (the LoRA paper, and peft's usual choice, adapts q and v).
"""
from __future__ import annotations

import math

import numpy as np

from triptych.common.checks import (
    InputError,
    check_finite,
    check_min_ndim,
    check_positive_int,
    check_shape,
)
from triptych.common.lora_checks import (
    check_alpha,
    check_dropout_p,
    check_init,
    check_linear_args,
    check_lora,
    check_lora_mha,
    check_mha_params,
    check_rank,
    check_targets,
)
from numpy_impl.multihead import calculate_multihead_attention, get_multihead_qkv, linear, merge_heads, split_heads

__all__ = [
    "lora_scaling",
    "init_lora_params",
    "lora_dropout_mask",
    "lora_delta",
    "lora_branch",
    "lora_linear",
    "merge_lora",
    "unmerge_lora",
    "init_lora_mha_params",
    "lora_multihead_attention",
    "merge_lora_mha",
    "merge_adapters",
    # NumPy only: the explicit forward-with-cache that the hand-written backward needs, and the demo.
    "lora_linear_forward",
    "fit_low_rank_change",
]
__backend_only__ = ("lora_linear_forward", "fit_low_rank_change")



# ----------------------------------------------------------------------------------------------

def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """s = alpha / r, or alpha / sqrt(r) with rsLoRA (rank-stabilised: Kalajdzievski, 2023).

    Shapes: scalars -> scalar
    """
    check_positive_int("r", r)
    check_alpha(alpha)
    return alpha / math.sqrt(r) if use_rslora else alpha / r


def init_lora_params(d_in: int, d_out: int, r: int, init: str = "default", seed: int = 0,
                     dtype=np.float64) -> dict[str, np.ndarray]:
    """A fresh adapter for a (d_out, d_in) weight, drawn as peft draws it (see the module docstring).

    Shapes: -> lora_A (r, d_in), lora_B (d_out, r)
    """
    check_positive_int("d_in", d_in)
    check_positive_int("d_out", d_out)
    check_rank(r, d_in, d_out)
    check_init(init)
    rng = np.random.default_rng(seed)
    # kaiming_uniform_(a=sqrt(5)) on a (fan_out, fan_in) weight: gain sqrt(2/(1+5)), bound gain*sqrt(3/fan_in).
    bound_a = 1.0 / math.sqrt(d_in)
    if init == "gaussian":
        a = rng.normal(0.0, 1.0 / r, (r, d_in))
    else:
        a = rng.uniform(-bound_a, bound_a, (r, d_in))
    if init == "random":
        b = rng.uniform(-1.0 / math.sqrt(r), 1.0 / math.sqrt(r), (d_out, r))
    else:
        b = np.zeros((d_out, r))
    return {"lora_A": a.astype(dtype), "lora_B": b.astype(dtype)}


def lora_dropout_mask(shape, p: float, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Inverted dropout as a multiplier: each entry is 0 with probability p, else 1/(1-p), so the
    LoRA branch keeps its expected value. Pass it to lora_linear(dropout_mask=...) in training.

    Shapes: shape of x -> same
    """
    check_dropout_p(p)
    keep = np.random.default_rng(seed).random(tuple(shape)) >= p
    return (keep / (1.0 - p)).astype(dtype)


def lora_delta(lora: dict, alpha: float, use_rslora: bool = False) -> np.ndarray:
    """The change the adapter makes to the weight: s * B A (rank <= r).

    Shapes: lora_A (r, d_in), lora_B (d_out, r) -> (d_out, d_in)
    """
    r = check_lora(lora)
    return lora_scaling(r, alpha, use_rslora) * (lora["lora_B"] @ lora["lora_A"])


def lora_branch(x: np.ndarray, lora: dict, scaling: float, dropout_mask: np.ndarray | None = None) -> np.ndarray:
    """The adapter's own contribution s * (dropout(x) A^T) B^T, added to whatever the frozen layer gives.

    Shapes: x (..., d_in), lora_A (r, d_in), lora_B (d_out, r) -> (..., d_out)
    """
    check_lora(lora, x.shape[-1])
    xd = x if dropout_mask is None else x * dropout_mask
    return scaling * ((xd @ lora["lora_A"].T) @ lora["lora_B"].T)


def lora_linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, lora: dict, alpha: float,
                        use_rslora: bool = False, dropout_mask: np.ndarray | None = None):
    """lora_linear, step by step, also returning what the backward needs.

    Shapes: x (..., d_in), w (d_out, d_in), b (d_out,) -> y (..., d_out), cache
    """
    r = check_linear_args(x, w, b, lora)
    check_finite("x", np.isfinite(x).all())
    s = lora_scaling(r, alpha, use_rslora)
    if dropout_mask is not None:
        check_shape("dropout_mask", dropout_mask, x.shape)
    xd = x if dropout_mask is None else x * dropout_mask  # (1) dropout on the LoRA branch only
    u = xd @ lora["lora_A"].T                              # (2) down-projection     (..., r)
    y = linear(x, w, b) + s * (u @ lora["lora_B"].T)        # (3) frozen path + scaled up-projection
    cache = {"xd": xd, "u": u, "w": w, "lora": lora, "s": s, "dropout_mask": dropout_mask}
    return y, cache


def lora_linear_backward(dy: np.ndarray, cache: dict) -> dict[str, np.ndarray]:
    """Gradients of the loss for A, B (the trainable part) and x (to keep back-propagating).
    W and b are frozen: no gradient is formed for them at all, which is where LoRA saves memory.

    Shapes: dy (..., d_out) -> lora_A (r, d_in), lora_B (d_out, r), x (..., d_in)
    """
    xd, u, w, lora, s, m = cache["xd"], cache["u"], cache["w"], cache["lora"], cache["s"], cache["dropout_mask"]
    check_shape("dy", dy, u.shape[:-1] + (w.shape[0],))
    r, d_in = lora["lora_A"].shape
    dy2 = dy.reshape(-1, w.shape[0])                        # fold leading axes: sums over batch and time
    # (3) y += s * u B^T  ->  dB = s * dy^T u,  du = s * dy B
    d_b = s * dy2.T @ u.reshape(-1, r)
    du = s * dy @ lora["lora_B"]
    # (2) u = xd A^T  ->  dA = du^T xd,  dxd = du A
    d_a = du.reshape(-1, r).T @ xd.reshape(-1, d_in)
    dxd = du @ lora["lora_A"]
    # (1) xd = x * mask ; frozen path y = x W^T + b  ->  dx = dy W + dxd * mask
    dx = dy @ w + (dxd if m is None else dxd * m)
    return {"lora_A": d_a, "lora_B": d_b, "x": dx}


def lora_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, lora: dict, alpha: float,
                use_rslora: bool = False, dropout_mask: np.ndarray | None = None) -> np.ndarray:
    """y = x W^T + b + s * (dropout(x) A^T) B^T, the adapter kept separate (unmerged).

    Shapes: x (..., d_in), w (d_out, d_in), b (d_out,), lora_A (r, d_in), lora_B (d_out, r) -> (..., d_out)
    """
    return lora_linear_forward(x, w, b, lora, alpha, use_rslora, dropout_mask)[0]


def merge_lora(w: np.ndarray, lora: dict, alpha: float, use_rslora: bool = False) -> np.ndarray:
    """W' = W + s B A: afterwards a plain linear layer computes what the adapted one did (in eval).

    Shapes: w (d_out, d_in) -> (d_out, d_in)
    """
    check_min_ndim("w", w, 2, "(d_out, d_in)")
    check_lora(lora, w.shape[1], w.shape[0])
    return w + lora_delta(lora, alpha, use_rslora)


def merge_adapters(params: dict, adapters: dict, alpha: float) -> tuple[dict, dict]:
    """params with every adapter folded in, and the scaling of each: for every "<key>.lora_A" /
    "<key>.lora_B" pair in adapters, params[key] becomes merge_lora's W + s B A (s = alpha / r, r read
    from A). Weights without an adapter are shared, not copied.

    Shapes: params {key: (d_out, d_in), ...}, adapters {key.lora_A: (r, d_in), key.lora_B: (d_out, r)}
            -> (params' keys and shapes, {key: s})
    """
    merged, scale = dict(params), {}
    for a_key in adapters:
        if a_key.endswith(".lora_A"):
            key = a_key[: -len(".lora_A")]
            lora = {"lora_A": adapters[a_key], "lora_B": adapters[key + ".lora_B"]}
            merged[key] = merge_lora(params[key], lora, alpha)
            scale[key] = lora_scaling(int(lora["lora_A"].shape[0]), alpha)
    return merged, scale


def unmerge_lora(w_merged: np.ndarray, lora: dict, alpha: float, use_rslora: bool = False) -> np.ndarray:
    """W = W' - s B A (recomputes the delta, so in low precision it is not bit-exact, as in peft).

    Shapes: w_merged (d_out, d_in) -> (d_out, d_in)
    """
    check_min_ndim("w_merged", w_merged, 2, "(d_out, d_in)")
    check_lora(lora, w_merged.shape[1], w_merged.shape[0])
    return w_merged - lora_delta(lora, alpha, use_rslora)


# ----------------------------------------------------------------------------------------------
# LoRA inside multi-head attention (numpy_impl.multihead's params dict: w_q, b_q, ..., w_o, b_o).

def init_lora_mha_params(d_model: int, r: int, targets=("q", "v"), init: str = "default", seed: int = 0,
                         dtype=np.float64) -> dict[str, dict[str, np.ndarray]]:
    """One adapter per adapted projection, each for a (d_model, d_model) weight.

    Shapes: -> {target: {lora_A (r, C), lora_B (C, r)}}
    """
    targets = check_targets(targets)
    return {t: init_lora_params(d_model, d_model, r, init, seed + i, dtype) for i, t in enumerate(targets)}


def lora_multihead_attention(x: np.ndarray, params: dict, lora_params: dict, n_heads: int, alpha: float,
                             use_rslora: bool = False, kv: np.ndarray | None = None,
                             mask: np.ndarray | None = None):
    """numpy_impl.multihead.multihead_attention with LoRA on the projections named in lora_params
    (unmerged, eval mode). Keys and values are projected from kv (x for self-attention).

    Shapes: x (B, T_q, C), kv (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, H, T_q, T_k)
    """
    # The frozen layer first (it also checks x, kv, params and n_heads), then each adapter adds its
    # low-rank term to its projection: q = x W_q^T + b_q + s (x A_q^T) B_q^T, and so on.
    q, k, v = get_multihead_qkv(x, params, n_heads, kv)
    targets = check_lora_mha(lora_params, x.shape[-1])
    r = {t: int(lora_params[t]["lora_A"].shape[0]) for t in targets}
    kv = x if kv is None else kv
    if "q" in targets:
        q = q + split_heads(lora_branch(x, lora_params["q"], lora_scaling(r["q"], alpha, use_rslora)), n_heads)
    if "k" in targets:
        k = k + split_heads(lora_branch(kv, lora_params["k"], lora_scaling(r["k"], alpha, use_rslora)), n_heads)
    if "v" in targets:
        v = v + split_heads(lora_branch(kv, lora_params["v"], lora_scaling(r["v"], alpha, use_rslora)), n_heads)
    heads, weights = calculate_multihead_attention(q, k, v, mask)          # (B, H, T_q, D)
    merged = merge_heads(heads)                                            # (B, T_q, C)
    out = linear(merged, params["w_o"], params["b_o"])
    if "o" in targets:
        out = out + lora_branch(merged, lora_params["o"], lora_scaling(r["o"], alpha, use_rslora))
    return out, weights


def merge_lora_mha(params: dict, lora_params: dict, alpha: float, use_rslora: bool = False) -> dict:
    """A plain multi-head attention params dict with every adapter folded into its weight.

    Shapes: {w_*: (C, C), b_*: (C,)} -> same
    """
    check_mha_params(params)
    targets = check_lora_mha(lora_params, params["w_q"].shape[0])
    merged = dict(params)
    for t in targets:
        merged[f"w_{t}"] = merge_lora(params[f"w_{t}"], lora_params[t], alpha, use_rslora)
    return merged


# ----------------------------------------------------------------------------------------------
# The demonstration: only A and B learn; the frozen layer plus a low-rank change is the target.

def fit_low_rank_change(d_in: int = 64, d_out: int = 48, r: int = 4, target_rank: int = 4, n_samples: int = 512,
                        steps: int = 300, lr: float = 0.02, alpha: float = 8.0, seed: int = 0,
                        on_step=None) -> dict:
    """Freeze a random layer W, b; make a target layer W + Delta with rank(Delta) = target_rank; train
    only A and B of an adapter (Adam, mean squared error, full batch) with the backward above.
    A starts as peft's default; B starts at zero, so step 0's loss is exactly the target change's
    energy and the adapter can only learn from there. on_step(step, loss) is called every step.

    Shapes: -> {"losses": (steps,), "lora": {...}, "delta_error": relative Frobenius error of s B A,
                "target_delta": (d_out, d_in), "x": (n_samples, d_in), parameter counts}
    """
    for name, v in (("d_in", d_in), ("d_out", d_out), ("n_samples", n_samples), ("steps", steps)):
        check_positive_int(name, v)
    check_rank(r, d_in, d_out)
    check_rank(target_rank, d_in, d_out)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise InputError(f"lr: expected a positive learning rate, got {lr!r}")
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d_out, d_in)) / math.sqrt(d_in)
    b = rng.standard_normal(d_out) * 0.1
    delta = (rng.standard_normal((d_out, target_rank)) @ rng.standard_normal((target_rank, d_in))) / d_in
    x = rng.standard_normal((n_samples, d_in))
    y_target = x @ (w + delta).T + b
    lora = init_lora_params(d_in, d_out, r, "default", seed=seed + 1)

    # Adam on A and B only (the state is 2 numbers per trainable parameter: see calculators.memory).
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = {k: np.zeros_like(v) for k, v in lora.items()}
    v2 = {k: np.zeros_like(v) for k, v in lora.items()}
    losses = np.empty(steps)
    for step in range(steps):
        y, cache = lora_linear_forward(x, w, b, lora, alpha)
        err = y - y_target
        losses[step] = np.mean(err ** 2)
        grads = lora_linear_backward(2.0 * err / err.size, cache)  # d mean(err^2) / dy
        lr_t = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))  # cosine decay: settles instead of jittering
        for k in lora:
            m[k] = beta1 * m[k] + (1 - beta1) * grads[k]
            v2[k] = beta2 * v2[k] + (1 - beta2) * grads[k] ** 2
            m_hat, v_hat = m[k] / (1 - beta1 ** (step + 1)), v2[k] / (1 - beta2 ** (step + 1))
            lora[k] = lora[k] - lr_t * m_hat / (np.sqrt(v_hat) + eps)
        if on_step is not None:
            on_step(step, float(losses[step]))
    learned = lora_delta(lora, alpha)
    return {
        "losses": losses,
        "lora": lora,
        "delta_error": float(np.linalg.norm(learned - delta) / np.linalg.norm(delta)),
        "target_delta": delta,
        "x": x,
        "trainable_params": int(lora["lora_A"].size + lora["lora_B"].size),
        "frozen_params": int(w.size + b.size),
    }
