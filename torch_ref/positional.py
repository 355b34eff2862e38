"""Positional encodings, torch side.

- sinusoidal: the PyTorch tutorial's PositionalEncoding code (div_term = exp(arange(0, d, 2) *
  -ln(10000)/d)), batch-first, table built in float64 (see numpy_impl for why).
- learned: F.embedding over position ids, which is what nn.Embedding does.
- rotary, layout "half": the rotation is Hugging Face's Llama `apply_rotary_pos_emb` itself. Its
  cos/sin module (LlamaRotaryEmbedding) computes the frequencies in float32, which would cap float64
  parity near 1e-7, so rope_cos_sin repeats its formula in float64; a test checks the two agree in
  float32.
- rotary, layout "interleaved": Meta's original Llama rotation, channel pairs as complex numbers
  times exp(i * angle) (torch.polar, view_as_complex), angles in float64.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.checks import (
    InputError,
    check_choice,
    check_finite,
    check_float,
    check_min_ndim,
    check_ndim,
    check_positive_int,
    check_same,
)
from triptych.common.backend_checks import check_even, check_positions, check_rope_rows
from torch_ref._checks import all_finite

__all__ = [
    "sinusoidal_encoding",
    "PositionalEncoding",
    "learned_positional_encoding",
    "rope_cos_sin",
    "apply_rope",
    "rope_half_to_interleaved",
    "rope_interleaved_to_half",
]

ROPE_LAYOUTS = ("half", "interleaved")


def sinusoidal_encoding(max_len: int, d_model: int, base: float = 10000.0, dtype=torch.float64) -> torch.Tensor:
    """Shapes: -> (max_len, d_model); row 0 is [0, 1, 0, 1, ...]"""
    check_positive_int("max_len", max_len)
    check_even("d_model", d_model, "the sinusoidal encoding")
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


def _angles(positions, d_head: int, base: float) -> torch.Tensor:
    """pos * inv_freq in float64, inv_freq = 1 / base^(2i/D) as LlamaRotaryEmbedding writes it."""
    positions = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
    check_ndim("positions", positions, (1, 2), "(T,) or (B, T)")
    inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float64) / d_head))
    return positions[..., None] * inv_freq  # (..., T, D/2)


def rope_cos_sin(positions, d_head: int, base: float = 10000.0, dtype=torch.float64, layout: str = "half"):
    """Shapes: positions (T,) or (B, T) -> cos, sin (T, D) or (B, T, D): cat(freqs, freqs) as
    LlamaRotaryEmbedding ("half"), or each frequency twice in a row ("interleaved")"""
    check_choice("layout", layout, ROPE_LAYOUTS)
    check_even("d_head", d_head, "RoPE")
    freqs = _angles(positions, d_head, base)
    emb = torch.cat((freqs, freqs), dim=-1) if layout == "half" else freqs.repeat_interleave(2, dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rope_complex(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Meta's original Llama code (apply_rotary_emb): channels (2i, 2i+1) are the real and imaginary
    parts of one complex number, multiplied by exp(i * angle); angles broadcast against x[..., ::2]."""
    freqs_cis = torch.polar(torch.ones_like(angles), angles)  # complex128, |z| = 1
    x_c = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(x_c * freqs_cis.to(x_c.dtype)).flatten(-2)


def apply_rope(x: torch.Tensor, positions=None, base: float = 10000.0, layout: str = "half") -> torch.Tensor:
    """"half": Hugging Face Llama's apply_rotary_pos_emb; "interleaved": the complex rotation.

    Shapes: x (..., T, D), positions (T,) or (B, T) (default 0..T-1; (B, T) needs x (B, ..., T, D))
            -> (..., T, D)
    """
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    check_choice("layout", layout, ROPE_LAYOUTS)
    check_min_ndim("x", x, 2, "(..., T, D)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    T, D = x.shape[-2], x.shape[-1]
    positions = np.arange(T) if positions is None else np.asarray(positions)
    check_positions(x, positions)
    # cos/sin get as many axes as x: (T, .) -> (1, ..., 1, T, .), (B, T, .) -> (B, 1, ..., 1, T, .).
    lead = (x.shape[0],) + (1,) * (x.ndim - 3) if positions.ndim == 2 else (1,) * (x.ndim - 2)
    if layout == "interleaved":
        check_even("d_head", D, "RoPE")
        angles = _angles(positions, D, base)
        return _rope_complex(x, angles.reshape(lead + (T, D // 2)))
    cos, sin = rope_cos_sin(positions, D, base, dtype=x.dtype)
    cos, sin = cos.reshape(lead + (T, D)), sin.reshape(lead + (T, D))
    # apply_rotary_pos_emb rotates a (q, k) pair and unsqueezes cos/sin at unsqueeze_dim: at 0 they
    # have one axis more than x, so the result is (1, *x.shape) whatever x's rank; [0] drops it.
    rotated, _ = apply_rotary_pos_emb(x, x, cos, sin, unsqueeze_dim=0)
    return rotated[0]


def rope_half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's convert_hf_to_gguf permute: w.reshape(n_heads, 2, D/2, ...).swapaxes(1, 2).
    Shapes: w (n_heads * D, ...) -> same"""
    check_rope_rows(w, n_heads)
    D = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, D // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_interleaved_to_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face's own GGUF loader (LlamaTensorProcessor._reverse_permute_weights, on NumPy).
    Shapes: w (n_heads * D, ...) -> same"""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    check_rope_rows(w, n_heads)
    out = LlamaTensorProcessor()._reverse_permute_weights(w.detach().cpu().numpy(), n_heads, n_heads)
    return torch.from_numpy(np.ascontiguousarray(out)).to(w.device)
