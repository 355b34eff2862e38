"""Parameters as plain dicts of NumPy arrays, and converters to and from torch state_dicts.

Multi-head attention params (same keys in every backend; weights (d_out, d_in), used as x @ W.T + b):
    w_q, w_k, w_v, w_o  (C, C)      b_q, b_k, b_v, b_o  (C,)
torch's nn.MultiheadAttention packs the three input projections into one matrix:
    in_proj_weight (3C, C) = [w_q; w_k; w_v],  in_proj_bias (3C,) = [b_q; b_k; b_v],
    out_proj.weight = w_o,  out_proj.bias = b_o
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_positive_int

MHA_KEYS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o")


def init_mha_params(d_model: int, seed: int = 0, dtype=np.float64, bias_std: float = 0.1) -> dict[str, np.ndarray]:
    """Xavier-uniform weights as torch initialises in_proj, and small random biases (torch starts
    them at zero; non-zero here so every test exercises the bias path).

    Shapes: -> dict of (C, C) weights and (C,) biases
    """
    check_positive_int("d_model", d_model)
    rng = np.random.default_rng(seed)
    # xavier_uniform on the packed (3C, C) in_proj: bound = sqrt(6 / (fan_in + fan_out)).
    bound_in = np.sqrt(6.0 / (d_model + 3 * d_model))
    bound_out = 1.0 / np.sqrt(d_model)  # Linear's default kaiming_uniform(a=sqrt(5)) bound
    p = {}
    for name in ("q", "k", "v"):
        p[f"w_{name}"] = rng.uniform(-bound_in, bound_in, (d_model, d_model))
        p[f"b_{name}"] = rng.standard_normal(d_model) * bias_std
    p["w_o"] = rng.uniform(-bound_out, bound_out, (d_model, d_model))
    p["b_o"] = rng.standard_normal(d_model) * bias_std
    return {k: p[k].astype(dtype) for k in MHA_KEYS}


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def mha_params_from_torch(state_dict) -> dict[str, np.ndarray]:
    """nn.MultiheadAttention.state_dict() -> our dict (NumPy, the tensors' dtype kept)."""
    need = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    missing = [k for k in need if k not in state_dict]
    if missing:
        raise InputError(
            f"state_dict: expected nn.MultiheadAttention keys {list(need)} (packed in_proj, biases on), "
            f"missing {missing}"
        )
    w = _np(state_dict["in_proj_weight"])
    b = _np(state_dict["in_proj_bias"])
    if w.ndim != 2 or w.shape[0] != 3 * w.shape[1]:
        raise InputError(f"state_dict['in_proj_weight']: expected shape (3C, C), got {tuple(w.shape)}")
    c = w.shape[1]
    return {
        "w_q": w[:c].copy(), "b_q": b[:c].copy(),
        "w_k": w[c:2 * c].copy(), "b_k": b[c:2 * c].copy(),
        "w_v": w[2 * c:].copy(), "b_v": b[2 * c:].copy(),
        "w_o": _np(state_dict["out_proj.weight"]).copy(), "b_o": _np(state_dict["out_proj.bias"]).copy(),
    }


def mha_params_to_torch(params: dict) -> dict:
    """Our dict -> a state_dict that nn.MultiheadAttention(C, H, bias=True).load_state_dict accepts."""
    import torch

    missing = [k for k in MHA_KEYS if k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(MHA_KEYS)}, missing {missing}")
    t = {k: torch.as_tensor(np.array(_np(params[k]))) for k in MHA_KEYS}  # copy: JAX arrays are read-only
    return {
        "in_proj_weight": torch.cat([t["w_q"], t["w_k"], t["w_v"]], dim=0),
        "in_proj_bias": torch.cat([t["b_q"], t["b_k"], t["b_v"]], dim=0),
        "out_proj.weight": t["w_o"],
        "out_proj.bias": t["b_o"],
    }
