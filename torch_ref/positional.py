"""Positional encodings, torch side.

- sinusoidal: the PyTorch tutorial's PositionalEncoding code (div_term = exp(arange(0, d, 2) *
  -ln(10000)/d)), batch-first, table built in float64 (see numpy_impl for why).
- learned: F.embedding over position ids, which is what nn.Embedding does.
- rotary: the rotation is Hugging Face's Llama `apply_rotary_pos_emb` itself. Its cos/sin module
  (LlamaRotaryEmbedding) computes the frequencies in float32, which would cap float64 parity near
  1e-7, so rope_cos_sin repeats its formula in float64; a test checks the two agree in float32.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from common.checks import InputError, check_finite, check_float, check_min_ndim, check_ndim, check_positive_int, check_same
from torch_ref._checks import all_finite

__all__ = [
    "sinusoidal_encoding",
    "PositionalEncoding",
    "learned_positional_encoding",
    "rope_cos_sin",
    "apply_rope",
]


def _check_even(name: str, d: int, what: str) -> None:
    check_positive_int(name, d)
    if d % 2:
        raise InputError(f"{name}: expected an even size ({what} pairs sin/cos channels), got {d}")


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0, dtype=torch.float64) -> torch.Tensor:
    """Shapes: -> (max_len, d_model); row 0 is [0, 1, 0, 1, ...]"""
    check_positive_int("max_len", max_len)
    _check_even("d_model", d_model, "the sinusoidal encoding")
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(base) / d_model))
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.to(dtype)


class PositionalEncoding(torch.nn.Module):
    """The tutorial's module, batch-first, eval mode (dropout p=0.1 is off in eval, so it is omitted).

    Shapes: x (B, T, d_model) -> (B, T, d_model)
    """

    def __init__(self, d_model: int, max_len: int = 5000, base: float = 10000.0):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base).unsqueeze(0))  # (1, max_len, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_ndim("x", x, 3, "(B, T, d_model)")
        check_float("x", x)
        check_same("x", x.shape[-1], "d_model", self.d_model, "last-axis size")
        if x.shape[1] > self.max_len:
            raise InputError(f"x: expected at most max_len={self.max_len} positions, got {x.shape[1]}")
        return x + self.pe[:, : x.size(1)].to(x.dtype)


def learned_positional_encoding(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Shapes: x (B, T, C), table (max_len, C) -> (B, T, C)"""
    check_ndim("x", x, 3, "(B, T, C)")
    check_ndim("table", table, 2, "(max_len, C)")
    check_same("table", table.shape[1], "x's last axis (C)", x.shape[-1], "width")
    if x.shape[1] > table.shape[0]:
        raise InputError(f"x: expected at most {table.shape[0]} positions (rows of table), got {x.shape[1]}")
    return x + F.embedding(torch.arange(x.shape[1], device=x.device), table)


def rope_cos_sin(positions, d_head: int, base: float = 10000.0, dtype=torch.float64):
    """Shapes: positions (T,) -> cos, sin (T, D), halves duplicated (LlamaRotaryEmbedding's layout)"""
    _check_even("d_head", d_head, "RoPE rotates")
    positions = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    check_ndim("positions", positions, 1, "(T,)")
    inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float64) / d_head))
    freqs = positions[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, positions=None, base: float = 10000.0) -> torch.Tensor:
    """Shapes: x (..., T, D), positions (T,) (default 0..T-1) -> (..., T, D)"""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    check_min_ndim("x", x, 2, "(..., T, D)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    T, D = x.shape[-2], x.shape[-1]
    positions = np.arange(T) if positions is None else np.asarray(positions)
    check_same("positions", positions.shape[0] if positions.ndim == 1 else -1, "x's sequence axis (T)", T, "length")
    cos, sin = rope_cos_sin(positions, D, base, dtype=x.dtype)
    # apply_rotary_pos_emb rotates a (q, k) pair; cos/sin broadcast over x's leading axes.
    rotated, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=0)
    return rotated
