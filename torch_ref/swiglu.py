"""SiLU and the SwiGLU MLP, torch side: F.silu, and Hugging Face's own LlamaMLP module run with our
weights (torch.func.functional_call), so the referee is the code Llama checkpoints run through.

The module is built once per (d, d_ff, dtype) on the meta device (no memory, no random init; the
weights always come from the caller) from a tiny LlamaConfig, which needs no download.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from triptych.common.checks import check_float
from triptych.common.backend_checks import SWIGLU_KEYS, check_swiglu
from torch_ref._checks import all_finite_each

__all__ = ["silu", "swiglu_mlp"]

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
    d, d_ff = check_swiglu(x, params, all_finite_each)
    weights = {HF_NAMES[k]: params[k] for k in SWIGLU_KEYS}
    return torch.func.functional_call(_llama_mlp(d, d_ff), weights, (x,))
