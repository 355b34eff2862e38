"""The GPT's non-attention layers as torch computes them (the referee for numpy_impl/layers.py).

Each function calls torch's own op (F.linear, F.embedding, F.layer_norm, F.gelu, F.dropout) so that
autograd, not our algebra, provides the reference gradients. Names and signatures mirror
numpy_impl.layers; NumPy additionally has the `*_forward` / `*_backward` pairs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from triptych.common.checks import InputError, check_float, check_ndim, check_same
from torch_ref.multihead import linear, multihead_attention

__all__ = ["linear", "embedding", "layer_norm", "gelu", "mlp", "dropout", "transformer_block"]

MLP_KEYS = ("w_fc", "b_fc", "w_proj", "b_proj")


def embedding(idx: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Shapes: idx (...) ints in [0, V), table (V, C) -> (..., C)"""
    check_ndim("table", table, 2, "(V, C)")
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise InputError(f"idx: expected integer token ids, got dtype {str(idx.dtype).replace('torch.', '')}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= table.shape[0]):
        raise InputError(f"idx: expected token ids in [0, {table.shape[0]}), got values in [{int(idx.min())}, {int(idx.max())}]")
    return F.embedding(idx, table)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Shapes: x (..., C), weight (C,), bias (C,) -> (..., C)"""
    check_float("x", x)
    check_same("weight", weight.shape[-1], "x's last axis (C)", x.shape[-1], "size")
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh approximation. Shapes: any -> same"""
    return F.gelu(x, approximate="tanh")


def mlp(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Shapes: x (..., C) -> (..., C)"""
    missing = [k for k in MLP_KEYS if k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(MLP_KEYS)}, missing {missing}")
    return F.linear(gelu(F.linear(x, params["w_fc"], params["b_fc"])), params["w_proj"], params["b_proj"])


def dropout(x: torch.Tensor, p: float, rng: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout; rng=None or p=0 is the identity (evaluation). F.dropout draws from torch's
    global generator, so with an explicit generator the keep-mask is drawn from it directly.

    Shapes: any -> same
    """
    if not 0.0 <= p < 1.0:
        raise InputError(f"p: expected a probability in [0, 1), got {p!r}")
    if rng is None or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=rng, device=x.device) >= p
    return x * keep / (1.0 - p)


def transformer_block(x: torch.Tensor, params: dict, n_head: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pre-LN block: x + attn(ln_1(x)), then + mlp(ln_2(x)); attention via torch_ref.multihead.

    Shapes: x (B, T, C), mask broadcastable to (B, H, T, T) -> (B, T, C)
    """
    check_ndim("x", x, 3, "(B, T, C)")
    attn = {k[5:]: v for k, v in params.items() if k.startswith("attn.")}
    x = x + multihead_attention(layer_norm(x, params["ln_1.weight"], params["ln_1.bias"]), attn, n_head, mask=mask)[0]
    return x + mlp(layer_norm(x, params["ln_2.weight"], params["ln_2.bias"]),
                   {k[4:]: v for k, v in params.items() if k.startswith("mlp.")})
