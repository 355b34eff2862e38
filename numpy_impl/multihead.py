"""Multi-head attention in plain NumPy, first as small functions, then as one self-contained class.

    q, k, v = x W_q^T + b_q, ...           linear
    (B, T, C) -> (B, H, T, C/H)            split_heads: each head sees a contiguous C/H slice
    per-head softmax(q k^T / sqrt(C/H)) v  calculate_multihead_attention
    (B, H, T, C/H) -> (B, T, C)            merge_heads
    out = merged W_o^T + b_o               linear

Params are a dict with keys w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o (weights (C, C) in torch's
(d_out, d_in) layout); common.params converts to and from nn.MultiheadAttention state_dicts.
"""
from __future__ import annotations

import math

import numpy as np

from triptych.common.checks import (
    check_heads,
    check_mask,
    check_ndim,
    check_same,
)
from triptych.common.params import MHA_KEYS, init_mha_params, mha_params_from_torch, mha_params_to_torch
from triptych.common.backend_checks import check_mha_params, check_sequence, numpy_finite_each
from numpy_impl.attention import scaled_dot_product_attention, scaled_dot_product_attention_backward
from numpy_impl.masks import make_causal_mask

__all__ = [
    "linear",
    "split_heads",
    "merge_heads",
    "get_multihead_qkv",
    "calculate_multihead_attention",
    "multihead_attention",
    "self_attention",
    "MultiHeadAttention",
]
# Hand-written backward passes (NumPy only). Each takes the upstream gradient plus the forward's
# inputs/outputs it needs, and returns fresh gradients.
__all__ += [
    "linear_backward",
    "split_heads_backward",
    "merge_heads_backward",
    "get_multihead_qkv_backward",
    "calculate_multihead_attention_backward",
    "multihead_attention_backward",
]


def _check_sequence(name: str, x, d_model: int | None = None) -> None:
    check_sequence(name, x, d_model, numpy_finite_each)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """y = x W^T + b, torch's Linear layout.

    Shapes: x (..., d_in), w (d_out, d_in), b (d_out,) -> (..., d_out)
    """
    check_same("w", w.shape[-1], "x's last axis (d_in)", x.shape[-1], "input size")
    # One 2-D matmul over all leading axes at once: for a (B, T, d_in) input BLAS runs this about
    # twice as fast as numpy's loop of per-batch matmuls (it matters when training the GPT).
    y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0])
    return y if b is None else y + b


def linear_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray):
    """y = x W^T + b: dx = dy W, dW = dy^T x summed over every leading (batch, time) axis, and
    db = dy summed likewise (ignore db when the layer has no bias).

    Shapes: dy (..., d_out), x (..., d_in), w (d_out, d_in) -> dx (..., d_in), dw (d_out, d_in), db (d_out,)
    """
    # Fold batch and time into one axis: each product becomes a single large 2-D matmul, which
    # BLAS runs faster than numpy's loop of small per-batch matmuls.
    dy2 = dy.reshape(-1, dy.shape[-1])
    dx = (dy2 @ w).reshape(*dy.shape[:-1], w.shape[1])  # y = x W^T  ->  dx = dy W
    dw = dy2.T @ x.reshape(-1, x.shape[-1])  # y = x W^T  ->  dW = dy^T x
    return dx, dw, dy2.sum(axis=0)  # y = ... + b  ->  db = dy summed


def split_heads(x: np.ndarray, n_heads: int) -> np.ndarray:
    """Cut the channel axis into n_heads contiguous slices and move heads before time.

    Shapes: (B, T, C) -> (B, H, T, C/H)
    """
    check_ndim("x", x, 3, "(B, T, C)")
    check_heads(x.shape[-1], n_heads)
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def split_heads_backward(dy: np.ndarray) -> np.ndarray:
    """split_heads only moves numbers around, so its backward moves them back: merge_heads.

    Shapes: (B, H, T, D) -> (B, T, H*D)
    """
    return merge_heads(dy)


def merge_heads(x: np.ndarray) -> np.ndarray:
    """Inverse of split_heads: put the heads' slices side by side again.

    Shapes: (B, H, T, D) -> (B, T, H*D)
    """
    check_ndim("x", x, 4, "(B, H, T, D)")
    B, H, T, D = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def merge_heads_backward(dy: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse rearrangement: split_heads. Shapes: (B, T, C) -> (B, H, T, C/H)"""
    return split_heads(dy, n_heads)


def get_multihead_qkv(x: np.ndarray, params: dict, n_heads: int, kv: np.ndarray | None = None):
    """Project queries from x and keys/values from kv (x itself for self-attention), split into heads.

    Shapes: x (B, T_q, C), kv (B, T_k, C) -> q (B, H, T_q, C/H), k, v (B, H, T_k, C/H)
    """
    _check_sequence("x", x)
    d_model = x.shape[-1]
    check_heads(d_model, n_heads)
    check_mha_params(params, d_model)
    kv = x if kv is None else kv
    if kv is not x:
        _check_sequence("kv", kv, d_model)
        check_same("kv", kv.shape[0], "x's batch axis", x.shape[0], "batch size")
    q = split_heads(linear(x, params["w_q"], params["b_q"]), n_heads)
    k = split_heads(linear(kv, params["w_k"], params["b_k"]), n_heads)
    v = split_heads(linear(kv, params["w_v"], params["b_v"]), n_heads)
    return q, k, v


def get_multihead_qkv_backward(dq, dk, dv, x, params: dict, kv=None):
    """Gradients of the three projections. In self-attention (kv None) x feeds all three, so its
    gradient is the sum of the three paths; in cross-attention dkv collects the k and v paths.

    Shapes: dq (B, H, T_q, D), dk, dv (B, H, T_k, D), x (B, T_q, C), kv (B, T_k, C)
            -> dx (B, T_q, C), dkv (B, T_k, C) or None, grads {w_q, b_q, w_k, b_k, w_v, b_v}
    """
    src = x if kv is None else kv
    grads = {}
    dx, grads["w_q"], grads["b_q"] = linear_backward(split_heads_backward(dq), x, params["w_q"])  # q = split(x W_q^T + b_q)
    dsrc_k, grads["w_k"], grads["b_k"] = linear_backward(split_heads_backward(dk), src, params["w_k"])  # k = split(kv W_k^T + b_k)
    dsrc_v, grads["w_v"], grads["b_v"] = linear_backward(split_heads_backward(dv), src, params["w_v"])  # v likewise
    if kv is None:
        return dx + dsrc_k + dsrc_v, None, grads
    return dx, dsrc_k + dsrc_v, grads


def calculate_multihead_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None):
    """Scaled dot-product attention in every head at once (heads are just one more batch axis).

    Shapes: q (B, H, T_q, D), k, v (B, H, T_k, D), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, H, T_q, D), weights (B, H, T_q, T_k)
    """
    check_ndim("q", q, 4, "(B, H, T_q, D)")
    check_ndim("k", k, 4, "(B, H, T_k, D)")
    check_ndim("v", v, 4, "(B, H, T_k, D)")
    # The readable four steps of numpy_impl/attention.py; numpy_impl/flash.py's fast_attention gives
    # the same numbers faster, for a caller that asks for it by name.
    return scaled_dot_product_attention(q, k, v, mask=mask)


def calculate_multihead_attention_backward(dout, q, k, v, weights):
    """Per-head attention backward: heads are one more batch axis, so it is the SDPA backward.

    Shapes: dout (B, H, T_q, D), q (B, H, T_q, D), k, v (B, H, T_k, D), weights (B, H, T_q, T_k)
            -> dq, dk, dv (shapes of q, k, v)
    """
    return scaled_dot_product_attention_backward(dout, q, k, v, weights)


def multihead_attention(x: np.ndarray, params: dict, n_heads: int, kv: np.ndarray | None = None,
                        mask: np.ndarray | None = None):
    """The whole layer: project, split, attend per head, merge, project out.

    Shapes: x (B, T_q, C), kv (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, H, T_q, T_k)
    """
    q, k, v = get_multihead_qkv(x, params, n_heads, kv)
    heads, weights = calculate_multihead_attention(q, k, v, mask)
    return linear(merge_heads(heads), params["w_o"], params["b_o"]), weights


def multihead_attention_backward(dout, x, params: dict, n_heads: int, weights, kv=None):
    """Gradients of multihead_attention for x, kv and every parameter. Takes the forward's inputs and
    its `weights` output (which already carry the mask); q, k, v and the merged heads are recomputed
    from x with four matmuls rather than stored, so the call needs nothing the forward did not return.

    Shapes: dout (B, T_q, C), x (B, T_q, C), kv (B, T_k, C), weights (B, H, T_q, T_k)
            -> dx (B, T_q, C), dkv (B, T_k, C) or None for self-attention, grads {MHA_KEYS}
    """
    q, k, v = get_multihead_qkv(x, params, n_heads, kv)
    merged = merge_heads(weights @ v)
    dmerged, dw_o, db_o = linear_backward(dout, merged, params["w_o"])  # out = merged W_o^T + b_o
    dheads = merge_heads_backward(dmerged, n_heads)  # merged = merge_heads(heads)
    dq, dk, dv = calculate_multihead_attention_backward(dheads, q, k, v, weights)  # heads = attention(q, k, v)
    dx, dkv, grads = get_multihead_qkv_backward(dq, dk, dv, x, params, kv)  # q, k, v = projections of x, kv
    grads["w_o"], grads["b_o"] = dw_o, db_o
    return dx, dkv, {name: grads[name] for name in MHA_KEYS}


def self_attention(x: np.ndarray, params: dict, n_heads: int, causal: bool = False):
    """Exercise B's `self_attention`: every token attends to the sequence itself, optionally causally.

    Shapes: x (B, T, C) -> out (B, T, C), weights (B, H, T, T)
    """
    _check_sequence("x", x)
    mask = make_causal_mask(x.shape[1]) if causal else None
    return multihead_attention(x, params, n_heads, mask=mask)


class MultiHeadAttention:
    """A self-contained multi-head attention layer (batch-first), written without the functions
    above so a reader can see the whole computation in one place.

    Shapes: query (B, T_q, C), key/value (B, T_k, C), mask broadcastable to (B, H, T_q, T_k)
            -> out (B, T_q, C), weights (B, T_q, T_k) averaged over heads or (B, H, T_q, T_k)
    """

    def __init__(self, d_model: int, n_heads: int, params: dict | None = None, seed: int = 0, dtype=np.float64):
        check_heads(d_model, n_heads)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        params = init_mha_params(d_model, seed, dtype) if params is None else params
        check_mha_params(params, d_model)
        self.params = {k: np.asarray(params[k]) for k in MHA_KEYS}

    @classmethod
    def from_torch(cls, module) -> "MultiHeadAttention":
        """Copy the weights of a torch nn.MultiheadAttention (packed in_proj, biases on)."""
        return cls(module.embed_dim, module.num_heads, params=mha_params_from_torch(module.state_dict()))

    def load_state_dict(self, state_dict) -> None:
        params = mha_params_from_torch(state_dict)
        check_mha_params(params, self.d_model)
        self.params = params

    def state_dict(self) -> dict:
        """Weights in nn.MultiheadAttention's layout (torch tensors, ready for load_state_dict)."""
        return mha_params_to_torch(self.params)

    def __call__(self, query, key=None, value=None, mask=None, need_weights: bool = True,
                 average_attn_weights: bool = True):
        key = query if key is None else key
        value = key if value is None else value
        for name, t in (("query", query), ("key", key), ("value", value)):
            _check_sequence(name, t, self.d_model)
        check_same("value", value.shape[1], "key's sequence axis (T_k)", key.shape[1], "sequence length")
        B, T_q, _ = query.shape
        T_k = key.shape[1]
        H, D, p = self.n_heads, self.d_head, self.params

        # Project, then view channels as (H, D) and move heads forward: (B, T, C) -> (B, H, T, D).
        q = (query @ p["w_q"].T + p["b_q"]).reshape(B, T_q, H, D).transpose(0, 2, 1, 3)
        k = (key @ p["w_k"].T + p["b_k"]).reshape(B, T_k, H, D).transpose(0, 2, 1, 3)
        v = (value @ p["w_v"].T + p["b_v"]).reshape(B, T_k, H, D).transpose(0, 2, 1, 3)

        scores = np.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(D)  # (B, H, T_q, T_k)
        if mask is not None:
            check_mask("mask", mask, scores.shape)
            scores = np.where(mask, scores, -np.inf)
        row_max = scores.max(axis=-1, keepdims=True)
        e = np.exp(scores - np.where(np.isneginf(row_max), 0.0, row_max))
        denom = e.sum(axis=-1, keepdims=True)
        weights = e / np.where(denom == 0.0, 1.0, denom)  # fully masked rows stay all-zero

        heads = np.einsum("bhqk,bhkd->bhqd", weights, v)  # (B, H, T_q, D)
        out = heads.transpose(0, 2, 1, 3).reshape(B, T_q, H * D) @ p["w_o"].T + p["b_o"]
        if not need_weights:
            return out, None
        return out, (weights.mean(axis=1) if average_attn_weights else weights)
