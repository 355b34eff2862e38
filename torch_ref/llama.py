"""The Llama-style decoder, torch side, and the converters to and from Hugging Face LlamaForCausalLM.

Two referees live here:
- llama_forward & co.: the model as a function of the weight dict, from torch's and HF's own
  pieces (F.embedding, F.rms_norm, HF apply_rotary_pos_emb / the complex rotation for the
  interleaved layout, F.scaled_dot_product_attention(is_causal=True, enable_gqa=True), HF LlamaMLP,
  F.linear), differentiated by autograd. Exact in float64.
- hf_model: Hugging Face's LlamaForCausalLM itself, built from a tiny LlamaConfig (no download)
  and loaded with to_hf_state_dict(params, config); hf_loss_and_grads differentiates it.

HF in float64 is NOT float64 throughout (transformers 5.x): LlamaRMSNorm casts its input to float32
(`hidden_states.to(torch.float32)`), and LlamaRotaryEmbedding computes inv_freq and the angles in
float32. Both cap HF's float64 logits near 1e-7 of exact, which would hide any bug below that, so
hf_model(..., exact_float64=True) swaps exactly those two modules, through the public module tree
(no source patched): every RMSNorm for torch.nn.RMSNorm (F.rms_norm, same `weight` key) and the
rotary module for one computing HF's formula (torch_ref.positional.rope_cos_sin) in float64.
Everything else (embedding, decoder layers, GQA attention via sdpa, MLP, residuals, head tying)
is HF's code. HF's eager attention also runs its softmax in float32: use attn_implementation="sdpa"
for float64. The float32 comparisons run HF unmodified, eager and sdpa.

Checkpoints: the HF layout rotates channel i with i + D/2 ("half"). A config with
rope_layout="interleaved" (Meta's original code, GGUF) keeps w_q, w_k in that layout; the
converters permute their rows per head (positional.rope_interleaved_to_half, HF's GGUF loader),
so the HF model computes exactly the same logits.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.checks import InputError
from triptych.common.llama_config import LAYER_KEYS, LlamaConfig, check_llama_params, hf_key, llama_param_shapes
from triptych.common.token_checks import check_count, check_kv_caches, check_token_ids
from torch_ref import llama_block
from torch_ref.kvcache import cached_attention
from torch_ref.losses import cross_entropy
from torch_ref.norms import rms_norm
from torch_ref.positional import rope_cos_sin, rope_half_to_interleaved, rope_interleaved_to_half

__all__ = ["llama_forward", "llama_hidden_states", "llama_loss", "llama_loss_and_grads", "llama_forward_cached",
           "llama_decode_incrementally", "llama_generate",
           "hf_config", "hf_model", "to_hf_state_dict", "from_hf_state_dict", "hf_loss_and_grads"]
# Hugging Face lives on the torch side only (style.md: torch_ref is its one home).
__backend_only__ = ["hf_config", "hf_model", "to_hf_state_dict", "from_hf_state_dict", "hf_loss_and_grads"]

def _tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))  # copy: JAX arrays are read-only


def _rope_rows(key: str, config: LlamaConfig):
    """The head count whose rows a q/k weight carries, or None for weights RoPE does not touch."""
    return {"attn.w_q": config.n_heads, "attn.w_k": config.n_kv_heads}.get(key.split(".", 2)[-1])


def to_hf_state_dict(params: dict, config: LlamaConfig) -> dict[str, torch.Tensor]:
    """Our weight dict (NumPy, JAX or torch) -> a LlamaForCausalLM state_dict (torch tensors).
    Tied: lm_head.weight is the embedding tensor itself, as HF's own state_dict lists it."""
    check_llama_params(params, config)
    sd = {}
    for k, v in params.items():
        t = _tensor(v)
        heads = _rope_rows(k, config) if k.startswith("layers.") else None
        if heads is not None and config.rope_layout == "interleaved":
            t = rope_interleaved_to_half(t, heads)  # HF rotates halves: GGUF/Meta -> HF row order
        sd[hf_key(k)] = t
    if config.tie_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


def from_hf_state_dict(sd: dict, config: LlamaConfig) -> dict[str, np.ndarray]:
    """A LlamaForCausalLM state_dict (or a dict of its gradients) -> our weight dict, NumPy arrays in
    the tensors' dtype. Tied configs read model.embed_tokens.weight and ignore lm_head.weight (a
    checkpoint often omits it; HF re-ties it on load). Permutations are orthogonal, so the same map
    carries gradients back."""
    out = {}
    for k, shape in llama_param_shapes(config).items():
        hk = hf_key(k)
        if hk not in sd:
            raise InputError(f"sd: expected key {hk!r} (for our {k!r}), missing; got {len(sd)} keys")
        t = sd[hk].detach().cpu()
        heads = _rope_rows(k, config) if k.startswith("layers.") else None
        if heads is not None and config.rope_layout == "interleaved":
            t = rope_half_to_interleaved(t, heads)
        if tuple(t.shape) != shape:
            raise InputError(f"sd[{hk!r}]: expected shape {shape} for config's {k!r}, got {tuple(t.shape)}")
        out[k] = t.numpy().copy()
    return out


def hf_config(config: LlamaConfig, attn_implementation: str = "sdpa"):
    """Our config -> transformers.LlamaConfig (no biases, silu, default RoPE, the same sizes)."""
    from transformers import LlamaConfig as HFLlamaConfig

    return HFLlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.d_head, hidden_act="silu",
        max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps,
        tie_word_embeddings=config.tie_embeddings, attention_bias=False, mlp_bias=False,
        rope_parameters={"rope_type": "default", "rope_theta": float(config.rope_base)},
        attn_implementation=attn_implementation, use_cache=True)


class _Float64Rotary(torch.nn.Module):
    """LlamaRotaryEmbedding's forward (cat(freqs, freqs), cos, sin) with the angles in float64."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.d_head, self.base = config.d_head, float(config.rope_base)

    def forward(self, x, position_ids):
        cos, sin = rope_cos_sin(position_ids.cpu().numpy(), self.d_head, self.base, dtype=x.dtype)
        return cos.to(x.device), sin.to(x.device)


def hf_model(params: dict, config: LlamaConfig, dtype: torch.dtype | None = None, attn_implementation: str = "sdpa",
             exact_float64: bool = False):
    """Hugging Face LlamaForCausalLM with our weights, eval mode. Built on the meta device (no random
    init, so a 135M-parameter model costs only its load), then given the weights with assign=True;
    the rotary module's inv_freq (a non-persistent buffer) is rebuilt on the CPU. exact_float64: see
    the module docstring."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    hf = hf_config(config, attn_implementation)
    with torch.device("meta"):
        model = LlamaForCausalLM(hf)
    sd = to_hf_state_dict(params, config)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
        if config.tie_embeddings:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # .to() made a second tensor
    model.load_state_dict({k: v.clone() if k != "lm_head.weight" or not config.tie_embeddings else v
                           for k, v in sd.items()}, assign=True, strict=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight  # one Parameter, as HF ties it
    model.model.rotary_emb = LlamaRotaryEmbedding(hf)
    if exact_float64:
        model.model.rotary_emb = _Float64Rotary(config)
        norms = [(layer, name) for layer in model.model.layers for name in ("input_layernorm", "post_attention_layernorm")]
        for owner, name in norms + [(model.model, "norm")]:
            old = getattr(owner, name)
            new = torch.nn.RMSNorm(config.d_model, eps=config.norm_eps, dtype=old.weight.dtype)
            new.weight = old.weight
            setattr(owner, name, new)
    return model.eval()


def hf_loss_and_grads(params: dict, idx, targets, config: LlamaConfig, dtype: torch.dtype | None = None,
                      attn_implementation: str = "sdpa", exact_float64: bool = False):
    """HF's logits, our mean cross-entropy over them (torch_ref.losses, -100 ignored), and autograd's
    gradient of every parameter mapped back to our keys.

    Shapes: idx, targets (B, T) -> (float, logits (B, T, V) NumPy, grads with the keys of params)
    """
    model = hf_model(params, config, dtype, attn_implementation, exact_float64)
    logits = model(input_ids=_check_idx(idx, config)).logits
    loss = cross_entropy(logits, _tensor(np.asarray(targets)).long())
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}  # a tied matrix appears once, summed
    return float(loss.detach()), logits.detach().numpy(), from_hf_state_dict(grads, config)


# ----------------------------------------------------------------------------------------------
# the model from torch's own pieces


def _check_idx(idx, config: LlamaConfig) -> torch.Tensor:
    check_token_ids("idx", idx, config.vocab_size)
    return torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx).long()


def _as_torch(params: dict, config: LlamaConfig) -> dict:
    check_llama_params(params, config)
    return {k: _tensor(v) for k, v in params.items()}


@lru_cache(maxsize=64)
def _positions(t_past: int, t_new: int) -> np.ndarray:
    return np.arange(t_past, t_past + t_new)


def _cached_attend(kv):
    """llama_block's attend against one layer's cache (None: empty), torch_ref.kvcache.cached_attention."""
    def attend(q, k, v):
        a, new_kv = cached_attention(q, k, v, kv)
        return a, None, new_kv
    return attend


def _run(p: dict, idx: torch.Tensor, config: LlamaConfig, caches=None, use_cache: bool = False,
         states: list | None = None):
    """Shared by the full forward (use_cache False: causal SDPA, nothing kept) and cached decoding
    (caches: one per layer, or None for empty ones). `states` collects the residual stream."""
    t_past = 0 if caches is None else int(caches[0]["k"].shape[2])
    caches = [None] * config.n_layers if caches is None else caches
    positions = _positions(t_past, idx.shape[1])
    x = F.embedding(idx, p["embed.weight"])
    new_caches = []
    if states is not None:
        states.append(x)
    for i in range(config.n_layers):
        layer = {k: p[f"layers.{i}.{k}"] for k in LAYER_KEYS}
        attend = _cached_attend(caches[i]) if use_cache else llama_block.causal_attend
        x, acts = llama_block.llama_layer(x, layer, config, positions, attend)
        if use_cache:
            new_caches.append(acts.attn.kv)
        if states is not None:
            states.append(x)
    head = p["embed.weight"] if config.tie_embeddings else p["lm_head.weight"]
    return F.linear(rms_norm(x, p["norm.weight"], config.norm_eps), head), new_caches


def llama_forward(params: dict, idx, config: LlamaConfig) -> torch.Tensor:
    """Next-token logits; params: NumPy or torch tensors (autograd flows through torch ones).

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    return _run(_as_torch(params, config), _check_idx(idx, config), config)[0]


def llama_hidden_states(params: dict, idx, config: LlamaConfig) -> list[torch.Tensor]:
    """The embeddings, then every layer's output (before the final norm), as numpy_impl.llama's.

    Shapes: idx (B, T) ints -> n_layers + 1 tensors (B, T, C)
    """
    states = []
    _run(_as_torch(params, config), _check_idx(idx, config), config, states=states)
    return states


def llama_loss(params: dict, idx, targets, config: LlamaConfig) -> torch.Tensor:
    """Mean cross-entropy over positions whose target is not -100. Shapes: idx, targets (B, T) -> scalar"""
    logits = llama_forward(params, idx, config)
    return cross_entropy(logits, _tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets).long())


def llama_loss_and_grads(params: dict, idx, targets, config: LlamaConfig) -> tuple[float, dict[str, np.ndarray]]:
    """The loss and every parameter's gradient by torch autograd, from a NumPy weight dict.

    Shapes: idx (B, T), targets (B, T) -> (float, NumPy grads with the keys and shapes of params)
    """
    p = {k: v.detach().clone().requires_grad_(True) for k, v in _as_torch(params, config).items()}
    loss = llama_loss(p, idx, targets, config)
    loss.backward()
    return float(loss.detach()), {k: t.grad.numpy() for k, t in p.items()}


def llama_forward_cached(params: dict, idx, config: LlamaConfig, caches=None):
    """Only the new tokens against each layer's cache (torch.cat + SDPA enable_gqa, torch_ref.kvcache).

    Shapes: idx (B, T_new), caches: n_layers {"k": (B, H_kv, T_past, D), "v": ...} or None
            -> logits (B, T_new, V), the extended caches
    """
    check_kv_caches(caches, config.n_layers)
    return _run(_as_torch(params, config), _check_idx(idx, config), config, caches, use_cache=True)


@torch.no_grad()
def llama_decode_incrementally(params: dict, idx, config: LlamaConfig, prefill: int = 1) -> torch.Tensor:
    """`prefill` tokens in one call, then one per call. Shapes: idx (B, T) -> logits (B, T, V)"""
    idx = _check_idx(idx, config)
    T = idx.shape[1]
    check_count("prefill", prefill, 1, T)
    logits, caches = llama_forward_cached(params, idx[:, :prefill], config)
    outs = [logits]
    for t in range(prefill, T):
        logits, caches = llama_forward_cached(params, idx[:, t:t + 1], config, caches)
        outs.append(logits)
    return torch.cat(outs, dim=1)


@torch.no_grad()
def llama_generate(params: dict, idx, config: LlamaConfig, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding with the KV cache. Shapes: idx (B, T) -> (B, T + max_new_tokens) ints"""
    idx = _check_idx(idx, config)
    check_count("max_new_tokens", max_new_tokens, 0)
    out = [idx]
    if max_new_tokens:
        logits, caches = llama_forward_cached(params, idx, config)
        for step in range(max_new_tokens):
            nxt = logits[:, -1].argmax(dim=-1, keepdim=True)
            out.append(nxt)
            if step + 1 < max_new_tokens:
                logits, caches = llama_forward_cached(params, nxt, config, caches)
    return torch.cat(out, dim=1)
