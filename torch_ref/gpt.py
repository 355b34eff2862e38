"""The tiny GPT in PyTorch, the referee: torch's own kernels and autograd, over the shared weight dict.

    x = wte[idx] + wpe[:T]                                F.embedding, dropout
    n_layer times:
        x = x + dropout(attn(F.layer_norm(x)))            F.scaled_dot_product_attention(is_causal=True)
        x = x + dropout(mlp(F.layer_norm(x)))             F.linear, F.gelu(approximate="tanh")
    logits = F.layer_norm(x) wte^T                        tied head; F.cross_entropy(ignore_index=-100)

The model is a function of a flat dict of tensors with common.gpt_config's keys (no nn.Module): the
NumPy dict converts 1:1 (`params_to_torch`), and autograd differentiates through the lookups.
The course's experiments (positions other than learned, scale_embeddings, similarity, share_qkv,
post_softmax_mask, qkv_mlp, attention) live in torch_ref.gpt_variants, written independently of
numpy_impl from their definitions: the model asks it for the embeddings' positions and for each
block's attention.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.gpt_config import GPTConfig, check_idx, straight_embeddings
from torch_ref import gpt_variants
from torch_ref._gpt_ops import dropout

__all__ = ["gpt_forward", "gpt_loss", "gpt_loss_and_grads", "params_to_torch", "params_from_torch",
           "params_to_torch_state_dict", "params_from_torch_state_dict"]
# torch alone converts between the NumPy weight dict and tensors
__backend_only__ = ["params_to_torch", "params_from_torch", "params_to_torch_state_dict", "params_from_torch_state_dict"]


def params_to_torch(params: dict, dtype: torch.dtype | None = None, requires_grad: bool = False) -> dict:
    """NumPy (or torch) weight dict -> dict of torch tensors with the same keys (copies)."""
    out = {}
    for k, v in params.items():
        t = torch.tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v.detach().clone()
        t = t.to(dtype) if dtype is not None else t
        out[k] = t.requires_grad_(requires_grad)
    return out


def params_from_torch(params: dict) -> dict[str, np.ndarray]:
    """dict of torch tensors -> dict of NumPy arrays (same dtype)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in params.items()}


# The weight dict IS a state_dict (flat names -> tensors); these names say so at the call site.
params_to_torch_state_dict = params_to_torch
params_from_torch_state_dict = params_from_torch


def _sub(params: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _attention(h: torch.Tensor, p: dict, n_head: int, p_drop: float, rng) -> torch.Tensor:
    """softmax(q k^T / sqrt(D), causal) v over n_head heads: torch's fused kernel, or the explicit
    weights when dropout is on. p: a layer's `attn.` keys without the prefix. Shapes: h (B, T, C) -> (B, T, C)"""
    B, T, C = h.shape
    q, k, v = (F.linear(h, p[f"w_{n}"], p[f"b_{n}"]).view(B, T, n_head, C // n_head).transpose(1, 2)
               for n in "qkv")  # (B, H, T, D)
    if rng is None or p_drop == 0.0:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(C // n_head))
        causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        y = dropout(torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1), p_drop, rng) @ v
    return F.linear(y.transpose(1, 2).reshape(B, T, C), p["w_o"], p["b_o"])


def _block(x: torch.Tensor, p: dict, config: GPTConfig, rng, attention) -> torch.Tensor:
    """x + dropout(attn(ln_1(x))), then + dropout(mlp(ln_2(x))). p: layer i's keys without `h.{i}.`
    Shapes: x (B, T, C) -> (B, T, C)"""
    C = config.n_embd
    h = F.layer_norm(x, (C,), p["ln_1.weight"], p["ln_1.bias"])
    if attention is None:
        a = _attention(h, _sub(p, "attn."), config.n_head, config.dropout, rng)
    else:
        a = attention(h, _sub(p, "attn."), rng)
    x = x + dropout(a, config.dropout, rng)
    h = F.layer_norm(x, (C,), p["ln_2.weight"], p["ln_2.bias"])
    h = F.gelu(F.linear(h, p["mlp.w_fc"], p["mlp.b_fc"]), approximate="tanh")
    return x + dropout(F.linear(h, p["mlp.w_proj"], p["mlp.b_proj"]), config.dropout, rng)


def gpt_forward(params: dict, idx, config: GPTConfig, rng: torch.Generator | None = None) -> torch.Tensor:
    """Next-token logits at every position; `params` is a dict of torch tensors (params_to_torch).
    Dropout is active only when a torch.Generator `rng` is given (and config.dropout > 0).

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    check_idx("idx", idx, config)
    p, T = params, idx.shape[1]
    x = F.embedding(idx.long(), p["wte.weight"])
    if straight_embeddings(config):
        x = x + p["wpe.weight"][:T]
    else:
        x = gpt_variants.add_positions(x, p, config)
    x = dropout(x, config.dropout, rng)
    attention = gpt_variants.block_attention(config)  # None: the straight multi-head attention above
    for i in range(config.n_layer):
        x = _block(x, _sub(p, f"h.{i}."), config, rng, attention)
    x = F.layer_norm(x, (config.n_embd,), p["ln_f.weight"], p["ln_f.bias"])
    return F.linear(x, p["wte.weight"])  # tied head


def gpt_loss(params: dict, idx, targets, config: GPTConfig, rng: torch.Generator | None = None) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not -100 (0 if there are none).

    Shapes: idx (B, T), targets (B, T) ints -> scalar tensor
    """
    logits = gpt_forward(params, idx, config, rng)
    targets = torch.as_tensor(np.asarray(targets) if not isinstance(targets, torch.Tensor) else targets).long()
    if not bool((targets != -100).any()):
        return (logits * 0.0).sum()  # torch's mean over zero positions would be NaN
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


def gpt_loss_and_grads(params: dict, idx, targets, config: GPTConfig,
                       rng: torch.Generator | None = None) -> tuple[float, dict[str, np.ndarray]]:
    """The loss and the gradient of every parameter by torch autograd, from a NumPy weight dict.

    Shapes: idx (B, T), targets (B, T) -> (float, NumPy grads with the keys and shapes of params)
    """
    p = params_to_torch(params, requires_grad=True)
    loss = gpt_loss(p, idx, targets, config, rng)
    loss.backward()
    return float(loss.detach()), {k: (t.grad if t.grad is not None else torch.zeros_like(t)).numpy() for k, t in p.items()}
