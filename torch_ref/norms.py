"""RMSNorm, torch side: F.rms_norm itself (torch's fused kernel; for float16 input it accumulates in
float32, as Hugging Face's LlamaRMSNorm does by hand). parity_tests/test_modern_layers.py checks it
against LlamaRMSNorm too."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from triptych.common.checks import check_finite, check_float, check_min_ndim, check_ndim, check_same
from torch_ref._checks import all_finite

__all__ = ["rms_norm"]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Shapes: x (..., C), weight (C,) -> (..., C)"""
    check_min_ndim("x", x, 1, "(..., C)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    check_ndim("weight", weight, 1, "(C,)")
    check_same("weight", weight.shape[0], "x's last axis (C)", x.shape[-1], "size")
    return F.rms_norm(x, (x.shape[-1],), weight, eps)
