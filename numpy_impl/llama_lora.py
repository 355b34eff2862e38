"""LoRA fine-tuning of the Llama decoder in plain NumPy: adapters on chosen projections, the causal-LM
loss, and a hand-written backward that returns gradients for the adapters (optionally every weight).

For a frozen projection W (d_out, d_in) of layer i, target t in common.llama_lora.TARGET_KEYS:

    y = x W^T + s (x A^T) B^T = x (W + s B A)^T        A (r, d_in), B (d_out, r), s = alpha / r

(numpy_impl/lora.py's lora_linear with dropout off). LoRA is a reparametrisation of the weight the
layer uses, W_eff = W + s B A, so the forward runs the model's one wiring (llama_block.llama_layer)
on W_eff, and the backward needs only the gradient G = dL/dW_eff of each adapted projection, which
llama_block.llama_layer_backward forms when asked (weights=), then the chain rule through the product:

    dL/dB = s G A^T            (d_out, r)          dL/dA = s B^T G            (r, d_in)

(in entries: W_eff[o, j] = W[o, j] + s sum_k B[o, k] A[k, j]). In exact arithmetic x W_eff^T equals
peft's unmerged x W^T + s (x A^T) B^T; in floating point they differ by rounding only (the tests
compare with peft's unmerged branch). Frozen weights get no update, so the layer backward is asked
for the targets' G only: every layer still passes dx down, but the other projections' dW = dY^T X
matmuls (as costly as their dx matmuls) are skipped; G exists for one layer at a time. The
embedding, final norm and head are frozen too, so their gradients are skipped (the head's is the
largest matrix product of the backward: vocab x d_model). full=True asks for every weight.

Causal LM: idx = ids[:, :-1], targets = ids[:, 1:] (common.llama_lora.causal_lm_pairs), mean
cross-entropy over targets != -100 (padding). After training, merge_llama_lora folds every adapter
into its weight and the plain model (numpy_impl.llama, triptych/generation) runs unchanged.
"""
from __future__ import annotations

import numpy as np

from triptych.common.llama_config import LlamaConfig, check_llama_params
from triptych.common.llama_lora import DEFAULT_TARGETS, TARGET_KEYS, check_llama_lora, init_adapters, lora_targets_of
from triptych.common.token_checks import check_token_ids
from numpy_impl import llama_block
from numpy_impl.layers import embedding_backward, embedding_forward
from numpy_impl.llama import layer_params
from numpy_impl.lora import init_lora_params, merge_adapters
from numpy_impl.losses import cross_entropy_backward, cross_entropy_forward
from numpy_impl.multihead import linear
from numpy_impl.norms import rms_norm_backward, rms_norm_forward

__all__ = ["init_llama_lora", "merge_llama_lora", "llama_lora_forward", "llama_lora_loss",
           "llama_lora_loss_and_grads"]


def init_llama_lora(params: dict, config: LlamaConfig, r: int = 8, targets=DEFAULT_TARGETS, init: str = "default",
                    seed: int = 0, dtype=None) -> dict:
    """Fresh adapters for `targets` in every layer, drawn as peft draws them (numpy_impl.lora's
    init_lora_params: "default" has B = 0, so training starts from the pretrained model exactly).

    Shapes: -> {"layers.{i}.<weight>.lora_A": (r, d_in), "....lora_B": (d_out, r)}
    """
    return init_adapters(params, config, r, targets, init, seed, dtype, init_lora_params)


def _effective(params: dict, adapters: dict, config: LlamaConfig, alpha: float) -> tuple[dict, dict]:
    """(params with W + s B A in place of every adapted W, {weight key: s})."""
    check_llama_lora(params, adapters, config.n_layers, alpha)
    return merge_adapters(params, adapters, alpha)


def merge_llama_lora(params: dict, adapters: dict, config: LlamaConfig, alpha: float) -> dict:
    """A plain weight dict with every adapter folded in: W' = W + s B A (peft's merge_and_unload).
    The arrays of weights without an adapter are shared, not copied.

    Shapes: params (common.llama_config), adapters -> params' keys and shapes
    """
    check_llama_params(params, config)
    return _effective(params, adapters, config, alpha)[0]


def _forward(p: dict, idx: np.ndarray, config: LlamaConfig):
    """The model on weights p, every activation kept. Shapes: idx (B, T) -> logits (B, T, V), caches"""
    x, emb = embedding_forward(idx, p["embed.weight"])  # (B, T, C)
    positions = np.arange(idx.shape[1])
    layers = []
    for i in range(config.n_layers):
        x, cache = llama_block.llama_layer(x, layer_params(p, i), config, positions)
        layers.append(cache)
    xf, nf = rms_norm_forward(x, p["norm.weight"], config.norm_eps)
    head = p["embed.weight"] if config.tie_embeddings else p["lm_head.weight"]
    return linear(xf, head), (emb, layers, xf, nf, head)


def _checked(params, adapters, idx, config: LlamaConfig, alpha: float):
    check_llama_params(params, config)
    check_token_ids("idx", idx, config.vocab_size)
    return _effective(params, adapters, config, alpha)


def llama_lora_forward(params: dict, adapters: dict, idx, config: LlamaConfig, alpha: float) -> np.ndarray:
    """Next-token logits of the adapted model (base frozen, adapters unmerged in params).

    Shapes: idx (B, T) ints -> logits (B, T, vocab_size)
    """
    merged, _ = _checked(params, adapters, idx, config, alpha)
    return _forward(merged, np.asarray(idx), config)[0]


def llama_lora_loss(params: dict, adapters: dict, idx, targets, config: LlamaConfig, alpha: float) -> float:
    """Mean cross-entropy of the next-token predictions, targets == -100 ignored.

    Shapes: idx (B, T), targets (B, T) ints -> float
    """
    logits = llama_lora_forward(params, adapters, idx, config, alpha)
    return float(cross_entropy_forward(logits, np.asarray(targets))[0])


def _adapter_grads(g: np.ndarray, adapters: dict, w_key: str, s: float) -> dict:
    """Chain rule through W_eff = W + s B A. Shapes: g (d_out, d_in) -> lora_A (r, d_in), lora_B (d_out, r)"""
    a, b = adapters[w_key + ".lora_A"], adapters[w_key + ".lora_B"]
    sd = np.asarray(s, dtype=g.dtype)
    return {w_key + ".lora_A": sd * (b.T @ g), w_key + ".lora_B": sd * (g @ a.T)}


def llama_lora_loss_and_grads(params: dict, adapters: dict, idx, targets, config: LlamaConfig, alpha: float,
                              full: bool = False) -> tuple[float, dict]:
    """The loss and its gradient for every adapter matrix, by hand (see the module docstring). full=True
    also returns the frozen weights' gradients (under params' keys), as if they were trained too.

    Shapes: idx (B, T), targets (B, T) ints -> (float, grads with the keys and shapes of adapters
            [and params when full])
    """
    merged, scale = _checked(params, adapters, idx, config, alpha)
    logits, (emb, layers, xf, nf, head) = _forward(merged, np.asarray(idx), config)
    loss, ce = cross_entropy_forward(logits, np.asarray(targets))
    dlogits = cross_entropy_backward(1.0, ce)  # (B, T, V)
    dxf = dlogits @ head  # logits = xf W_head^T; W_head is frozen, so its gradient is not formed
    full_grads = {}
    if full:
        dhead = dlogits.reshape(-1, dlogits.shape[-1]).T @ xf.reshape(-1, xf.shape[-1])
    dx, dnorm = rms_norm_backward(dxf, nf)
    grads = {}
    # The adapted weights as a layer names them (every layer carries the same targets); None: all of them.
    asked = None if full else tuple(TARGET_KEYS[t] for t in lora_targets_of(adapters))
    for i in reversed(range(config.n_layers)):  # x = llama_layer(x): G for the asked projections of layer i
        dx, g = llama_block.llama_layer_backward(dx, layers[i], config, weights=asked)
        for k, gk in g.items():
            w_key = f"layers.{i}.{k}"
            if w_key in scale:
                grads.update(_adapter_grads(gk, adapters, w_key, scale[w_key]))
            if full:
                full_grads[w_key] = gk
    if full:
        full_grads["norm.weight"] = dnorm
        full_grads["embed.weight"] = embedding_backward(dx, emb)
        if config.tie_embeddings:
            full_grads["embed.weight"] += dhead  # the tied matrix is used twice: lookup and head
        else:
            full_grads["lm_head.weight"] = dhead
        grads.update({k: full_grads[k] for k in params})
    return float(loss), {k: grads[k] for k in list(adapters) + (list(params) if full else [])}
