"""The referee for numpy_impl/llama_decode.py and jax_impl/llama_decode.py: Hugging Face's own
fixed-size cache, transformers.StaticCache, driving LlamaForCausalLM (name for name with the twins).

StaticCache preallocates (B, H_kv, T_max, D) per layer and writes with index_copy_ at
cache_position, the torch.compile-friendly design that jax_impl's fixed-size cache mirrors; HF's
attention masks the slots past the current position. "stacked" here is the HF model itself
(torch_ref.llama.hf_model), built once; its weights are ours.
"""
from __future__ import annotations

import numpy as np
import torch

from triptych.common.checks import InputError, check_ndim
from triptych.common.llama_config import LlamaConfig, check_llama_params

__all__ = ["stack_params", "init_cache", "decode_forward", "decode_prefill", "decode_step"]


def stack_params(params: dict, config: LlamaConfig):
    """Our weight dict -> Hugging Face LlamaForCausalLM: eager attention for float32 (the reference
    `bench decode` names); for float64 weights SDPA with float64 RMSNorm and rotary
    (torch_ref.llama.hf_model's exact_float64), as eager computes its softmax in float32."""
    from torch_ref.llama import hf_model

    check_llama_params(params, config)
    dtype = torch.float64 if params["embed.weight"].dtype == np.float64 else torch.float32
    exact = dtype == torch.float64
    return hf_model(params, config, dtype, "sdpa" if exact else "eager", exact_float64=exact)


def init_cache(config: LlamaConfig, t_max: int, batch: int = 1, dtype="float32"):
    """transformers.StaticCache of max_cache_len = t_max (its batch size and dtype are taken from
    the first write, so `batch` and `dtype` only document the call)."""
    from transformers import StaticCache

    from torch_ref.llama import hf_config

    for name, v in (("t_max", t_max), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name}: expected a positive integer, got {v!r}")
    return StaticCache(config=hf_config(config), max_cache_len=int(t_max))


def decode_forward(stacked, idx, cache, t_past: int, config: LlamaConfig, last: int | None = None):
    """Shapes: idx (B, T_new) ints -> logits (B, V) at new position `last` (default T_new - 1), the cache"""
    idx = np.asarray(idx)
    check_ndim("idx", idx, 2, "(B, T_new) token ids")
    if not np.issubdtype(idx.dtype, np.integer) or idx.shape[1] == 0:
        raise InputError(f"idx: expected integer token ids with T_new >= 1, got shape {idx.shape} dtype {idx.dtype}")
    T = idx.shape[1]
    if isinstance(t_past, bool) or not isinstance(t_past, (int, np.integer)) or t_past < 0:
        raise InputError(f"t_past: expected a non-negative integer, got {t_past!r}")
    t_max = cache.get_max_length()
    if t_past + T > t_max:
        raise InputError(f"idx: expected at most T_max={t_max} positions in the cache, got t_past={t_past} "
                         f"+ {T} new = {t_past + T}")
    last = T - 1 if last is None else last
    positions = torch.arange(t_past, t_past + T)
    with torch.inference_mode():
        out = stacked(input_ids=torch.from_numpy(idx.astype(np.int64)), past_key_values=cache, use_cache=True,
                      cache_position=positions, position_ids=positions[None].expand(idx.shape[0], T),
                      logits_to_keep=T - last)
    return out.logits[:, 0], cache


def decode_prefill(stacked, idx, cache, config: LlamaConfig):
    """Shapes: idx (B, T) ints -> logits (B, V) at T - 1, the cache"""
    return decode_forward(stacked, idx, cache, 0, config)


def decode_step(stacked, token, cache, t_past: int, config: LlamaConfig):
    """Shapes: token (B, 1) ints -> logits (B, V), the cache"""
    return decode_forward(stacked, token, cache, t_past, config)
