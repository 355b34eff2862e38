"""SiLU and the SwiGLU MLP, torch side: F.silu, and Hugging Face's own LlamaMLP module run with our
weights (torch.func.functional_call), so the referee is the code Llama checkpoints run through.

The module is built once per (d, d_ff, dtype) on the meta device (no memory, no random init; the
weights always come from the caller) from a tiny LlamaConfig, which needs no download.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from triptych.common.checks import InputError, check_finite, check_float, check_min_ndim, check_shape
from torch_ref._checks import all_finite

__all__ = ["silu", "swiglu_mlp"]

SWIGLU_KEYS = ("w_gate", "w_up", "w_down")
# our key -> LlamaMLP's state_dict key
HF_NAMES = {"w_gate": "gate_proj.weight", "w_up": "up_proj.weight", "w_down": "down_proj.weight"}


def silu(x: torch.Tensor) -> torch.Tensor:
    """Shapes: any -> same"""
    check_float("x", x)
    return F.silu(x)


@lru_cache(maxsize=16)
def _llama_mlp(d: int, d_ff: int) -> torch.nn.Module:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    # One head of size 2: LlamaConfig validates its attention sizes (hidden_size % heads, an even
    # head_dim), which the MLP never uses; any d passes this way.
    config = LlamaConfig(hidden_size=d, intermediate_size=d_ff, num_attention_heads=1, num_key_value_heads=1,
                         head_dim=2, hidden_act="silu", mlp_bias=False)
    with torch.device("meta"):
        return LlamaMLP(config).eval()


def swiglu_mlp(x: torch.Tensor, params: dict) -> torch.Tensor:
    """HF LlamaMLP: down_proj(silu(gate_proj(x)) * up_proj(x)).

    Shapes: x (..., d), params w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff) -> (..., d)
    """
    check_min_ndim("x", x, 1, "(..., d)")
    check_float("x", x)
    check_finite("x", all_finite(x))
    if not isinstance(params, dict) or any(k not in params for k in SWIGLU_KEYS):
        missing = [k for k in SWIGLU_KEYS if not isinstance(params, dict) or k not in params]
        raise InputError(f"params: expected keys {list(SWIGLU_KEYS)}, missing {missing}")
    d = x.shape[-1]
    check_shape("params['w_gate']", params["w_gate"], (None, d))
    d_ff = params["w_gate"].shape[0]
    check_shape("params['w_up']", params["w_up"], (d_ff, d))
    check_shape("params['w_down']", params["w_down"], (d, d_ff))
    weights = {HF_NAMES[k]: params[k] for k in SWIGLU_KEYS}
    return torch.func.functional_call(_llama_mlp(d, d_ff), weights, (x,))
