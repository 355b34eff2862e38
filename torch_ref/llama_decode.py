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

from triptych.common.checks import check_positive_int
from triptych.common.llama_config import LlamaConfig, check_decode_inputs, check_llama_params

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

    check_positive_int("t_max", t_max)
    check_positive_int("batch", batch)
    return StaticCache(config=hf_config(config), max_cache_len=int(t_max))


def decode_forward(stacked, idx, cache, t_past: int, config: LlamaConfig, last: int | None = None):
    """Shapes: idx (B, T_new) ints -> logits (B, V) at new position `last` (default T_new - 1), the cache"""
    # HF's StaticCache hides its tensors' shape: the one it was built for stands in, so the twins'
    # check (common.llama_config.check_decode_inputs) refuses in the same words here.
    shape = (config.n_layers, np.shape(idx)[0] if np.ndim(idx) else 0, config.n_kv_heads, cache.get_max_length(),
             config.d_head)
    idx = check_decode_inputs(idx, shape, t_past, config)
    T = idx.shape[1]
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
