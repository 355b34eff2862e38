"""The LoRA and AdamW halves of blocks_backward.py's catalogue: their inputs, references and the
named wrong variants (each computed from its definition). Kept apart so each file reads in one go;
the leading underscore keeps this module out of the catalogue's discovery.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.crosscheck.exercises._conventions import adamw_conventions, adamw_mistakes, adamw_numpy
from triptych.crosscheck.exercises._grad import autodiff, is_torch, on_numpy


# ---------------------------------------------------------------- LoRA

def _lora_inputs(lead, d_in, d_out, r, alpha, bias=True, dropout=False, rslora=False):
    def make(rng, dt):
        shape = lead + (d_in,)
        keep = rng.random(shape) >= 0.25
        return {"x": rng.standard_normal(shape).astype(dt),
                "w": (rng.standard_normal((d_out, d_in)) / math.sqrt(d_in)).astype(dt),
                "b": (0.1 * rng.standard_normal(d_out)).astype(dt) if bias else None,
                # B != 0 (peft's init_lora_weights=False), so the adapter is not a no-op
                "lora": {"lora_A": (rng.standard_normal((r, d_in)) / math.sqrt(d_in)).astype(dt),
                         "lora_B": (rng.standard_normal((d_out, r)) / math.sqrt(r)).astype(dt)},
                "alpha": alpha, "use_rslora": rslora,
                "dropout_mask": (keep / 0.75).astype(dt) if dropout else None,
                "dy": rng.standard_normal(lead + (d_out,)).astype(dt)}
    return make


def _scaling(i, how="right"):
    r = i["lora"]["lora_A"].shape[0]
    right = i["alpha"] / math.sqrt(r) if i["use_rslora"] else i["alpha"] / r
    return {"right": right, "one": 1.0, "inverted": 1.0 / right, "plain": i["alpha"] / r}[how]


def _lora_fwd(i, how="right", mask_base=False):
    x, a, b = i["x"], i["lora"]["lora_A"], i["lora"]["lora_B"]
    xd = x if i["dropout_mask"] is None else x * i["dropout_mask"]
    y = (xd if mask_base else x) @ i["w"].T + _scaling(i, how) * (xd @ a.T) @ b.T
    return y if i["b"] is None else y + i["b"]


def _lora_ref(m, i):
    return m["lora"].lora_linear(i["x"], i["w"], i["b"], i["lora"], i["alpha"], i["use_rslora"], i["dropout_mask"])


def _lorab_ref(m, i):
    if on_numpy(i, "x"):
        _, cache = m["lora"].lora_linear_forward(i["x"], i["w"], i["b"], i["lora"], i["alpha"], i["use_rslora"],
                                                 i["dropout_mask"])
        g = m["lora"].lora_linear_backward(i["dy"], cache)
        return g["lora_A"], g["lora_B"], g["x"]
    if is_torch(i["x"]):  # autograd through peft's own LoRA layer
        import torch
        model, layer = m["lora"].peft_lora_linear(i["w"], i["b"], i["lora"], i["alpha"], i["use_rslora"])
        if i["dropout_mask"] is None:
            model.eval()
        else:
            mask = i["dropout_mask"]
            layer.lora_dropout["default"] = _Multiply(mask)
            model.train()
        x = i["x"].detach().clone().requires_grad_(True)
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        return tuple(torch.autograd.grad(model(x), (a, b, x), i["dy"]))
    return autodiff(m, i, lambda m, j: m["lora"].lora_linear(j["x"], j["w"], j["b"], j["lora"], j["alpha"],
                                                               j["use_rslora"], j["dropout_mask"]),
                     ("lora/lora_A", "lora/lora_B", "x"), "dy")


def _Multiply(mask):
    """peft's nn.Dropout replaced by a fixed keep mask (already scaled by 1/(1-p))."""
    import torch

    class Multiply(torch.nn.Module):
        def forward(self, x):
            return x * mask
    return Multiply()


def _lorab(i, how="right", dx_base_only=False, ignore_mask=False):
    x, dy, w = i["x"], i["dy"], i["w"]
    a, b = i["lora"]["lora_A"], i["lora"]["lora_B"]
    mask = None if ignore_mask else i["dropout_mask"]
    xd = x if mask is None else x * mask
    s = _scaling(i, how)
    dy2, xd2 = dy.reshape(-1, dy.shape[-1]), xd.reshape(-1, x.shape[-1])
    du = s * dy @ b  # y += s (xd A^T) B^T
    d_a, d_b = du.reshape(-1, a.shape[0]).T @ xd2, s * dy2.T @ (xd2 @ a.T)
    dxd = du @ a
    dx = dy @ w + (0 if dx_base_only else dxd if mask is None else dxd * mask)
    return d_a, d_b, dx


def _merge(i, how="right", sign=1.0, key="w"):
    return i[key] + sign * _scaling(i, how) * (i["lora"]["lora_B"] @ i["lora"]["lora_A"])


def _merge_inputs(d_in, d_out, r, alpha, rslora=False, b_zero=False, merged=False):
    def make(rng, dt):
        w = rng.standard_normal((d_out, d_in)).astype(dt)
        lora = {"lora_A": rng.standard_normal((r, d_in)).astype(dt),
                "lora_B": np.zeros((d_out, r), dt) if b_zero else rng.standard_normal((d_out, r)).astype(dt)}
        return {("w_merged" if merged else "w"): w, "lora": lora, "alpha": alpha, "use_rslora": rslora}
    return make


# ---------------------------------------------------------------- AdamW

def _adamw_inputs(shape, step, lr, betas, wd, fresh):
    def make(rng, dt):
        m = np.zeros(shape) if fresh else 0.1 * rng.standard_normal(shape)
        v = np.zeros(shape) if fresh else 0.01 * rng.random(shape) + 1e-4
        return {"p": rng.standard_normal(shape).astype(dt), "g": rng.standard_normal(shape).astype(dt),
                "m": m.astype(dt), "v": v.astype(dt), "step": step, "lr": lr, "betas": list(betas), "eps": 1e-8,
                "weight_decay": wd}
    return make


def _adamw_ref(m, i):
    """Each backend's dict-of-tensors adamw_step on one parameter (torch_ref runs torch.optim.AdamW)."""
    state = {"step": i["step"] - 1, "m": {"p": i["m"]}, "v": {"p": i["v"]}}
    new, st = m["optim"].adamw_step({"p": i["p"]}, {"p": i["g"]}, state, i["lr"], tuple(i["betas"]), i["eps"],
                                    i["weight_decay"])
    return new["p"], st["m"]["p"], st["v"]["p"]


def _adamw(i, **knobs):
    """One AdamW step in float64 with the knobs of _conventions.adamw_numpy (torch's form by default),
    returned in the case's dtype."""
    new, m, v = adamw_numpy(i["p"], i["g"], i["m"], i["v"], i["step"], i["lr"], i["betas"], i["eps"],
                            i["weight_decay"], **knobs)
    dt = i["p"].dtype
    return new.astype(dt), m.astype(dt), v.astype(dt)


# The handout's forms pass with their names; each mistake is named under any of them.
ADAMW_VARIANTS = adamw_conventions(_adamw) + adamw_mistakes(_adamw)
