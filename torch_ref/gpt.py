"""The tiny GPT in PyTorch, the referee: torch's own kernels and autograd, over the shared weight dict.

    x = wte[idx] (* sqrt(C)) (+ wpe[:T] | + sinusoidal[:T])   F.embedding, dropout
    n_layer times:
        x = x + dropout(attn(F.layer_norm(x)))            F.scaled_dot_product_attention(is_causal=True;
                                                          ALiBi: attn_mask = bias, -inf above the diagonal)
        x = x + dropout(mlp(F.layer_norm(x)))             F.linear, F.gelu(approximate="tanh")
    logits = F.layer_norm(x) wte^T                        tied head; F.cross_entropy(ignore_index=-100)

The model is a function of a flat dict of tensors with common.gpt_config's keys (no nn.Module): the
NumPy dict converts 1:1 (`params_to_torch`), and autograd differentiates through the lookups.
The course's attention experiments (GPTConfig.similarity, share_qkv, post_softmax_mask, qkv_mlp,
attention) are written here independently of numpy_impl, straight from their definitions; standard
attention goes through torch's fused kernel, the others build the (T, T) scores explicitly.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.checks import InputError, check_ndim
from triptych.common.gpt_config import GPTConfig, qkv_sources
from torch_ref.masks import alibi_bias
from torch_ref.positional import rope_cos_sin, sinusoidal_encoding

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


@lru_cache(maxsize=32)
def _sinusoidal(T: int, C: int, dtype: torch.dtype) -> torch.Tensor:
    return sinusoidal_encoding(T, C, dtype=dtype)


@lru_cache(maxsize=32)
def _rope(T: int, D: int, dtype: torch.dtype):
    return rope_cos_sin(np.arange(T), D, dtype=dtype)


@lru_cache(maxsize=32)
def _alibi(H: int, T: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ALiBi's (H, T, T) score bias, and the same with -inf above the diagonal: SDPA takes a float
    attn_mask OR is_causal, so the causal mask travels inside the bias."""
    bias = alibi_bias(H, T, dtype=dtype)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return bias, bias.masked_fill(~causal, float("-inf"))


def _rotate(x: torch.Tensor) -> torch.Tensor:
    """RoPE, Llama's rotate_half layout (channel i pairs with i + D/2). Shapes: (B, H, T, D) -> same"""
    cos, sin = _rope(x.shape[-2], x.shape[-1], x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def _project(h: torch.Tensor, p, pre: str, config: GPTConfig):
    """q, k, v (B, T, C) from h, each distinct projection computed once (shared ones reused)."""
    src = qkv_sources(config)
    out = {}
    for n in dict.fromkeys(src.values()):
        if config.qkv_mlp:
            m = pre + f"mlp_{n}."
            hidden = F.gelu(F.linear(h, p[m + "w_fc"], p[m + "b_fc"]), approximate="tanh")
            out[n] = F.linear(hidden, p[m + "w_proj"], p[m + "b_proj"])
        else:
            out[n] = F.linear(h, p[pre + f"w_{n}"], p[pre + f"b_{n}"])
    return out[src["q"]], out[src["k"]], out[src["v"]]


def _aft_simple(q, k, v):
    """Causal AFT-simple: y_t = sigmoid(q_t) * sum_{s<=t} exp(k_s) v_s / sum_{s<=t} exp(k_s), per channel.
    Shapes: q, k, v (B, T, C) -> (B, T, C)"""
    e = torch.exp(k - k.amax(dim=1, keepdim=True))  # the max cancels in the ratio; guards exp
    return torch.sigmoid(q) * (torch.cumsum(e * v, dim=1) / torch.cumsum(e, dim=1))


def _dropout(x: torch.Tensor, p: float, rng: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout drawn from `rng` (off without one): zero with probability p, scale by 1/(1-p)."""
    if rng is None or p == 0.0:
        return x
    keep = torch.rand(x.shape, generator=rng, dtype=x.dtype) >= p
    return x * keep / (1.0 - p)


def _attention(h: torch.Tensor, p, i: int, config: GPTConfig, rng) -> torch.Tensor:
    """Shapes: h (B, T, C) -> (B, T, C)"""
    pre = f"h.{i}.attn."
    q, k, v = _project(h, p, pre, config)
    if config.attention == "aft_simple":
        return F.linear(_aft_simple(q, k, v), p[pre + "w_o"], p[pre + "b_o"])
    B, T, C = h.shape
    H = config.n_head
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    if config.positions == "rope":
        q, k = _rotate(q), _rotate(k)
    dropout_on = rng is not None and config.dropout > 0
    alibi = _alibi(H, T, q.dtype) if config.positions == "alibi" else None
    if config.similarity == "dot" and not config.post_softmax_mask and not dropout_on:
        if alibi is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=alibi[1].to(h.device))
    else:
        scale = 1.0 / math.sqrt(C // H)
        if config.similarity == "dot":
            scores = (q @ k.transpose(-1, -2)) * scale
        elif config.similarity == "neg_sq_dist":
            # -|q_t - k_s|^2, (B, H, T, T), by torch's own pairwise-distance kernel: exact differences
            # (not the 2 q.k - |q|^2 - |k|^2 identity NumPy uses, so the two check each other) and no
            # (B, H, T, T, D) temporary; 14x faster than broadcasting at the experiment's size.
            scores = -torch.cdist(q, k, compute_mode="donot_use_mm_for_euclid_dist").pow(2) * scale
        else:  # cosine with a learned temperature per head
            temp = p[pre + "log_temp"].exp()[:, None, None]
            scores = temp * (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2))
        if alibi is not None:
            scores = scores + alibi[0].to(h.device)
        causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
        if config.post_softmax_mask:  # the wrong way: the future takes part in the normaliser
            weights = torch.softmax(scores, dim=-1) * causal
        else:
            weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        y = _dropout(weights, config.dropout, rng) @ v
    y = y.transpose(1, 2).reshape(B, T, C)
    return F.linear(y, p[pre + "w_o"], p[pre + "b_o"])


def _check_idx(idx, config: GPTConfig) -> torch.Tensor:
    idx = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx)
    check_ndim("idx", idx, 2, "(B, T) token ids")
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise InputError(f"idx: expected integer token ids, got dtype {idx.dtype}")
    if config.positions == "learned" and idx.shape[1] > config.block_size:
        raise InputError(f"idx: expected at most block_size={config.block_size} positions with learned "
                         f"positions (the table has no rows beyond), got {idx.shape[1]}")
    return idx.long()


def gpt_forward(params: dict, idx, config: GPTConfig, rng: torch.Generator | None = None) -> torch.Tensor:
    """Next-token logits at every position; `params` is a dict of torch tensors (params_to_torch).
    Dropout is active only when a torch.Generator `rng` is given (and config.dropout > 0).

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    idx = _check_idx(idx, config)
    p = params
    T, C = idx.shape[1], config.n_embd
    x = F.embedding(idx, p["wte.weight"])
    if config.scale_embeddings:
        x = x * math.sqrt(C)
    if config.positions == "learned":
        x = x + p["wpe.weight"][:T]
    elif config.positions == "sinusoidal":
        x = x + _sinusoidal(T, C, x.dtype)
    x = _dropout(x, config.dropout, rng)
    for i in range(config.n_layer):
        pre = f"h.{i}."
        h = F.layer_norm(x, (C,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
        x = x + _dropout(_attention(h, p, i, config, rng), config.dropout, rng)
        h = F.layer_norm(x, (C,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
        h = F.gelu(F.linear(h, p[pre + "mlp.w_fc"], p[pre + "mlp.b_fc"]), approximate="tanh")
        x = x + _dropout(F.linear(h, p[pre + "mlp.w_proj"], p[pre + "mlp.b_proj"]), config.dropout, rng)
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"])
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
