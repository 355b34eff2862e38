"""torch-side helpers for the shared input checks."""
from __future__ import annotations

import torch


def all_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())
