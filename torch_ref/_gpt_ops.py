"""The dropout of torch_ref.gpt and torch_ref.gpt_variants: one random stream for the model, drawn in
the activations' dtype (torch_ref.layers.dropout is the checked, public layer)."""
from __future__ import annotations

import torch


def dropout(x: torch.Tensor, p: float, rng: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawn from `rng` (off without one): zero with probability p, scale by 1/(1-p).
    Shapes: any -> same"""
    if rng is None or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=rng, dtype=x.dtype) >= p
    return x * keep / (1.0 - p)
