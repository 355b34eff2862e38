"""torch-side helpers for the shared input checks."""
from __future__ import annotations

import torch


def all_finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x).all())


def all_finite_each(*xs: torch.Tensor) -> list[bool]:
    """all_finite for several tensors (the reader triptych/common/backend_checks takes)."""
    return [all_finite(x) for x in xs]
