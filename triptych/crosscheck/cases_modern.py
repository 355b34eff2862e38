"""Parity rows for the modern decoder's pieces: SiLU, RMSNorm, the SwiGLU MLP
and RoPE in both channel layouts, at the registry's sizes (B=4, H=8, T=128, d_head=64, d_model=512).

torch_ref runs torch's F.silu / F.rms_norm, Hugging Face's LlamaMLP and apply_rotary_pos_emb, and a
complex-number rotation for the interleaved layout; crosscheck.cases.all_cases() adds these rows.
"""
from __future__ import annotations

import numpy as np

from triptych.crosscheck.cases import B, D_HEAD, D_MODEL, H, T, Case, _qkv

# Llama's ratio: d_ff about 8/3 d_model, rounded up to a multiple of 32 (8/3 * 512 = 1365.3 -> 1376).
D_FF = 1376


def _x(rng, dtype, scale=1.0):
    return {"x": (rng.standard_normal((B, T, D_MODEL)) * scale).astype(dtype)}


def _rms(rng, dtype, scale=1.0):
    # A weight around 1 with spread, as a trained RMSNorm has; not all ones, which would hide its role.
    return {**_x(rng, dtype, scale), "weight": (1.0 + 0.5 * rng.standard_normal(D_MODEL)).astype(dtype)}


def _swiglu(rng, dtype):
    # 1/sqrt(fan_in) weights keep every activation O(1), so float32 is judged on rounding, not on size.
    def w(rows, cols):
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(dtype)

    return {**_x(rng, dtype), "params": {"w_gate": w(D_FF, D_MODEL), "w_up": w(D_FF, D_MODEL),
                                         "w_down": w(D_MODEL, D_FF)}}


def _offsets(rng, dtype):
    """(B, T) positions: each sequence starts at its own offset (a KV cache, packed sequences), up
    to 4096 so the slow frequencies turn too."""
    starts = rng.integers(0, 4096, size=(B, 1))
    return {**_qkv(rng, dtype), "positions": starts + np.arange(T)}


def _proj(rng, dtype):
    return {"w": rng.standard_normal((H * D_HEAD, D_MODEL)).astype(dtype)}


CASES: list[Case] = [
    Case("silu (inputs up to +-40)", lambda m, i: (m["swiglu"].silu(i["x"]),), lambda rng, dt: _x(rng, dt, 10.0)),
    Case("rms_norm", lambda m, i: (m["norms"].rms_norm(i["x"], i["weight"], 1e-6),), _rms),
    # Vectors of RMS 0.01 with eps = 1e-4: eps is as large as mean(x^2), so putting it outside the
    # square root (or leaving it out) would show.
    Case("rms_norm eps=1e-4 (tiny inputs)", lambda m, i: (m["norms"].rms_norm(i["x"], i["weight"], 1e-4),),
         lambda rng, dt: _rms(rng, dt, 0.01)),
    Case("swiglu_mlp (d_ff=1376)", lambda m, i: (m["swiglu"].swiglu_mlp(i["x"], i["params"]),), _swiglu),
    Case("apply_rope interleaved", lambda m, i: (m["positional"].apply_rope(i["q"], layout="interleaved"),), _qkv),
    Case("apply_rope half, (B, T) offsets",
         lambda m, i: (m["positional"].apply_rope(i["q"], i["positions"], layout="half"),), _offsets),
    Case("apply_rope interleaved, (B, T) offsets",
         lambda m, i: (m["positional"].apply_rope(i["q"], i["positions"], layout="interleaved"),), _offsets),
    Case("apply_rope base=500000 (Llama 3)",
         lambda m, i: (m["positional"].apply_rope(i["k"], i["positions"], base=500000.0),), _offsets),
    Case("rope_half_to_interleaved (W_q rows)",
         lambda m, i: (m["positional"].rope_half_to_interleaved(i["w"], H),), _proj),
    Case("rope_interleaved_to_half (W_q rows)",
         lambda m, i: (m["positional"].rope_interleaved_to_half(i["w"], H),), _proj),
]
