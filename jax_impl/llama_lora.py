"""LoRA on the Llama decoder in JAX: numpy_impl/llama_lora.py's model (read it for the maths), the
adapted weight W + (alpha / r) B A inside the traced function, so jax.value_and_grad differentiates
through the product and gives the adapters' gradients; one jitted program per configuration and
batch shape (config, alpha and the target set are static).

Adapters: common.llama_lora's flat dict ("layers.{i}.<weight>.lora_A" (r, d_in), ".lora_B" (d_out, r)).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from triptych.common.llama_config import LlamaConfig, check_llama_params
from triptych.common.llama_lora import DEFAULT_TARGETS, init_adapters, check_llama_lora
from triptych.common.token_checks import check_token_ids
from jax_impl import llama_block
from jax_impl.llama import layer_params
from jax_impl.losses import cross_entropy
from jax_impl.lora import init_lora_params, merge_adapters
from jax_impl.norms import rms_norm

__all__ = ["init_llama_lora", "merge_llama_lora", "llama_lora_forward", "llama_lora_loss",
           "llama_lora_loss_and_grads"]


def init_llama_lora(params: dict, config: LlamaConfig, r: int = 8, targets=DEFAULT_TARGETS, init: str = "default",
                    seed: int = 0, dtype=None) -> dict:
    """Fresh adapters for `targets` in every layer: jax_impl.lora.init_lora_params (peft's
    distributions, drawn with jax.random; "default" has B = 0, so training starts at the base model).

    Shapes: -> {"layers.{i}.<weight>.lora_A": (r, d_in), "....lora_B": (d_out, r)}
    """
    return init_adapters(params, config, r, targets, init, seed, dtype, init_lora_params)


def _merged(params: dict, adapters: dict, alpha: float) -> dict:
    """params with W + s B A for every adapted W (s = alpha / r, r read from A's static shape)."""
    return merge_adapters(params, adapters, alpha)[0]


def _logits(adapters, params, idx, config: LlamaConfig, alpha: float):
    p = _merged(params, adapters, alpha)
    positions = np.arange(idx.shape[1])
    x = p["embed.weight"][idx]
    for i in range(config.n_layers):
        x, _ = llama_block.llama_layer(x, layer_params(p, i), config, positions)
    head = p["embed.weight"] if config.tie_embeddings else p["lm_head.weight"]
    return rms_norm(x, p["norm.weight"], config.norm_eps) @ head.T


def _loss(adapters, params, idx, targets, config: LlamaConfig, alpha: float):
    return cross_entropy(_logits(adapters, params, idx, config, alpha), targets)


_jit_logits = jax.jit(_logits, static_argnums=(3, 4))
_jit_merged = jax.jit(_merged, static_argnums=2)
_jit_loss = jax.jit(_loss, static_argnums=(4, 5))
_jit_loss_and_grads = jax.jit(jax.value_and_grad(_loss), static_argnums=(4, 5))
_jit_loss_and_all_grads = jax.jit(jax.value_and_grad(_loss, argnums=(0, 1)), static_argnums=(4, 5))


def _checked(params, adapters, idx, config: LlamaConfig, alpha: float):
    check_llama_params(params, config)
    check_llama_lora(params, adapters, config.n_layers, alpha)
    check_token_ids("idx", idx, config.vocab_size)  # JAX would clamp an id out of range silently
    return jnp.asarray(idx)


def merge_llama_lora(params: dict, adapters: dict, config: LlamaConfig, alpha: float) -> dict:
    """A plain weight dict with every adapter folded in: W' = W + s B A.

    Shapes: params (common.llama_config), adapters -> params' keys and shapes
    """
    check_llama_params(params, config)
    check_llama_lora(params, adapters, config.n_layers, alpha)
    return _jit_merged(params, adapters, float(alpha))


def llama_lora_forward(params: dict, adapters: dict, idx, config: LlamaConfig, alpha: float):
    """Shapes: idx (B, T) ints -> logits (B, T, vocab_size)"""
    idx = _checked(params, adapters, idx, config, alpha)
    return _jit_logits(adapters, params, idx, config, float(alpha))


def llama_lora_loss(params: dict, adapters: dict, idx, targets, config: LlamaConfig, alpha: float):
    """Mean cross-entropy, targets == -100 ignored. Shapes: idx, targets (B, T) -> scalar"""
    idx = _checked(params, adapters, idx, config, alpha)
    return _jit_loss(adapters, params, idx, jnp.asarray(targets), config, float(alpha))


def llama_lora_loss_and_grads(params: dict, adapters: dict, idx, targets, config: LlamaConfig, alpha: float,
                              full: bool = False):
    """The loss and jax.grad of it for every adapter matrix (the base weights are constants); full=True
    also differentiates with respect to the base weights.

    Shapes: idx, targets (B, T) -> (scalar, grads with the keys and shapes of adapters [and params])
    """
    idx = _checked(params, adapters, idx, config, alpha)
    if not full:
        return _jit_loss_and_grads(adapters, params, idx, jnp.asarray(targets), config, float(alpha))
    loss, (g_adapters, g_params) = _jit_loss_and_all_grads(adapters, params, idx, jnp.asarray(targets), config,
                                                           float(alpha))
    return loss, {**g_adapters, **g_params}
