"""LoRA on the Llama decoder, the referee: Hugging Face's LlamaForCausalLM (torch_ref.llama.hf_model,
built from our weight dict) wrapped by peft's get_peft_model with a LoraConfig on the HF modules of
the targets (common.llama_lora.HF_MODULES: q_proj, v_proj, ...), lora_dropout 0, lora_alpha alpha,
r from the adapters; our A and B are copied into peft's "default" adapter. peft computes the
unmerged branch base(x) + lora_B(lora_A(x)) * alpha / r, and torch autograd differentiates it.

Rows of q and k: HF rotates halves of each head. With rope_layout="interleaved" the weights are
permuted per head on the way in (torch_ref.llama.to_hf_state_dict), so lora_B of q and k (its rows are
the projection's outputs) is permuted the same way, and its gradient permuted back.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from triptych.common.llama_config import LlamaConfig, check_llama_params
from triptych.common.llama_lora import DEFAULT_TARGETS, HF_MODULES, TARGET_KEYS, adapter_key, check_llama_lora, \
    check_llama_lora_targets, lora_targets_of
from triptych.common.lora_checks import check_init, check_rank
from triptych.common.token_checks import check_token_ids
from torch_ref.llama import from_hf_state_dict, hf_model
from torch_ref.losses import cross_entropy
from torch_ref.positional import rope_half_to_interleaved, rope_interleaved_to_half

__all__ = ["init_llama_lora", "merge_llama_lora", "llama_lora_forward", "llama_lora_loss",
           "llama_lora_loss_and_grads"]
# The peft model itself and its adapters as a dict: what a torch training loop holds on to.
__backend_only__ = ["peft_llama", "adapters_of", "adapter_grads_of"]

_INIT_TO_PEFT = {"default": True, "gaussian": "gaussian", "random": False}


def _hf_layer(model, i: int, t: str):
    """The peft lora.Linear of layer i, target t, inside a peft-wrapped LlamaForCausalLM."""
    layer = model.base_model.model.model.layers[i]
    owner = layer.self_attn if TARGET_KEYS[t].startswith("attn.") else layer.mlp
    return getattr(owner, HF_MODULES[t])


def _rows(t: str, config: LlamaConfig):
    """The head count whose RoPE row order lora_B of target t follows, or None."""
    return {"q": config.n_heads, "k": config.n_kv_heads}.get(t) if config.rope_layout == "interleaved" else None


def peft_llama(params: dict, adapters: dict | None, config: LlamaConfig, alpha: float, r: int | None = None,
               targets=None, dtype: torch.dtype | None = None, exact_float64: bool = False, init: str = "random"):
    """HF LlamaForCausalLM with our weights (eval mode: no dropout anywhere), wrapped by peft; the
    adapters set to `adapters` when given, else left as peft drew them with `init` (then r and
    targets are needed). exact_float64: torch_ref.llama.hf_model's float64 RMSNorm and RoPE."""
    from peft import LoraConfig, get_peft_model

    check_llama_params(params, config)
    if adapters is not None:
        ranks = set(check_llama_lora(params, adapters, config.n_layers, alpha).values())
        targets, r = lora_targets_of(adapters), ranks.pop()
        if ranks:
            raise ValueError("adapters: peft's LoraConfig takes one rank r; these adapters have several")
    targets = check_llama_lora_targets(targets)
    check_init(init)
    base = hf_model(params, config, dtype, exact_float64=exact_float64)
    lcfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=[HF_MODULES[t] for t in targets], lora_dropout=0.0,
                      init_lora_weights=_INIT_TO_PEFT[init], bias="none")
    with warnings.catch_warnings():  # peft asks transformers 5 a deprecated question; nothing for our user
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(base, lcfg)
    if adapters is not None:
        _load(model, adapters, config, targets)
    return model.eval()


def _load(model, adapters: dict, config: LlamaConfig, targets) -> None:
    with torch.no_grad():
        for i in range(config.n_layers):
            for t in targets:
                layer = _hf_layer(model, i, t)
                w = layer.lora_A["default"].weight
                a = torch.as_tensor(np.array(adapters[adapter_key(i, t, "lora_A")]))
                b = torch.as_tensor(np.array(adapters[adapter_key(i, t, "lora_B")]))
                heads = _rows(t, config)
                b = rope_interleaved_to_half(b, heads) if heads else b
                w.copy_(a.to(w.dtype))
                layer.lora_B["default"].weight.copy_(b.to(w.dtype))


def _read(model, config: LlamaConfig, grad: bool) -> dict:
    out = {}
    for i in range(config.n_layers):
        for t in TARGET_KEYS:
            layer = _hf_layer(model, i, t)
            if not hasattr(layer, "lora_A"):
                continue
            for part, mod in (("lora_A", layer.lora_A), ("lora_B", layer.lora_B)):
                x = mod["default"].weight
                x = (x.grad if grad else x).detach()
                heads = _rows(t, config)
                if heads and part == "lora_B":
                    x = rope_half_to_interleaved(x, heads)
                out[adapter_key(i, t, part)] = x.cpu().numpy().copy()
    return out


def adapters_of(model, config: LlamaConfig) -> dict:
    """A peft-wrapped model's adapters as our flat dict of NumPy arrays."""
    return _read(model, config, grad=False)


def adapter_grads_of(model, config: LlamaConfig) -> dict:
    """After loss.backward(): every adapter's .grad under our keys, NumPy."""
    return _read(model, config, grad=True)


def init_llama_lora(params: dict, config: LlamaConfig, r: int = 8, targets=DEFAULT_TARGETS, init: str = "default",
                    seed: int = 0, dtype=None) -> dict:
    """peft's own initialisation of every adapter (under torch.manual_seed(seed), global RNG restored).

    Shapes: -> {"layers.{i}.<weight>.lora_A": (r, d_in), "....lora_B": (d_out, r)} NumPy
    """
    targets = check_llama_lora_targets(targets)
    for t in targets:
        d_out, d_in = params[f"layers.0.{TARGET_KEYS[t]}"].shape
        check_rank(r, int(d_in), int(d_out))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = peft_llama(params, None, config, float(r), r, targets, init=init)
    out = adapters_of(model, config)
    return out if dtype is None else {k: v.astype(dtype) for k, v in out.items()}


def merge_llama_lora(params: dict, adapters: dict, config: LlamaConfig, alpha: float) -> dict:
    """peft's merge_and_unload, read back as our weight dict (NumPy).

    Shapes: params (common.llama_config), adapters -> params' keys and shapes
    """
    model = peft_llama(params, adapters, config, alpha)
    merged = model.merge_and_unload()
    return from_hf_state_dict(merged.state_dict(), config)


def _exact(params: dict) -> bool:
    """float64 weights: HF's float32 RMSNorm and RoPE swapped for float64 ones (torch_ref.llama.hf_model)."""
    return np.asarray(params["embed.weight"]).dtype == np.float64


def llama_lora_forward(params: dict, adapters: dict, idx, config: LlamaConfig, alpha: float) -> torch.Tensor:
    """peft's logits (unmerged adapters). Shapes: idx (B, T) ints -> logits (B, T, vocab_size)"""
    check_token_ids("idx", idx, config.vocab_size)
    model = peft_llama(params, adapters, config, alpha, exact_float64=_exact(params))
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(np.asarray(idx)).long()).logits


def llama_lora_loss(params: dict, adapters: dict, idx, targets, config: LlamaConfig, alpha: float) -> torch.Tensor:
    """Mean cross-entropy, targets == -100 ignored. Shapes: idx, targets (B, T) -> scalar"""
    logits = llama_lora_forward(params, adapters, idx, config, alpha)
    return cross_entropy(logits, torch.as_tensor(np.asarray(targets)).long())


def _base_grads(model, config: LlamaConfig) -> dict:
    """The frozen weights' .grad under our keys (peft's names less its prefix and .base_layer)."""
    sd = {name.removeprefix("base_model.model.").replace(".base_layer", ""): p.grad
          for name, p in model.named_parameters() if "lora_" not in name}
    return from_hf_state_dict(sd, config)


def llama_lora_loss_and_grads(params: dict, adapters: dict, idx, targets, config: LlamaConfig, alpha: float,
                              full: bool = False) -> tuple[float, dict]:
    """The loss and autograd's gradient of every adapter matrix (the base is frozen by peft); full=True
    also asks autograd for every frozen weight's gradient (under params' keys).

    Shapes: idx (B, T), targets (B, T) -> (float, grads with the keys and shapes of adapters [and params], NumPy)
    """
    check_token_ids("idx", idx, config.vocab_size)
    model = peft_llama(params, adapters, config, alpha, exact_float64=_exact(params))
    if full:
        for name, p in model.named_parameters():
            p.requires_grad_(True)
    logits = model(input_ids=torch.as_tensor(np.asarray(idx)).long()).logits
    loss = cross_entropy(logits, torch.as_tensor(np.asarray(targets)).long())
    loss.backward()
    grads = adapter_grads_of(model, config)
    return float(loss.detach()), {**grads, **_base_grads(model, config)} if full else grads
