"""Grouped-query attention (Ainslie et al. 2023; Llama 2 70B, Llama 3, Mistral), in plain NumPy.

H query heads share H_kv key/value heads (H_kv divides H): the heads form H_kv groups of
n_rep = H / H_kv consecutive query heads, and query head h reads KV head h // n_rep. H_kv = H is
ordinary multi-head attention, H_kv = 1 multi-query attention (Shazeer 2019). The point is the KV
cache: it holds H_kv heads, not H, so it is n_rep times smaller.

    k_rep = repeat_kv(k, n_rep)      (B, H_kv, T_k, D) -> (B, H, T_k, D)   copy KV head g to heads g*n_rep..
    v_rep = repeat_kv(v, n_rep)
    out   = attention(q, k_rep, v_rep)                                   numpy_impl/attention.py, unchanged

Backward: attention's backward gives dk_rep and dv_rep per query head; every query head of a group
used the same KV head, so that head's gradient is the sum over its group (repeat_kv_backward).
Repeating is what Hugging Face Llama does (repeat_kv); torch SDPA's enable_gqa=True does the same
inside its kernel.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import check_ndim, check_positive_int
from triptych.common.backend_checks import check_groups
from numpy_impl.attention import scaled_dot_product_attention, scaled_dot_product_attention_backward

__all__ = ["repeat_kv", "grouped_query_attention"]
__all__ += ["repeat_kv_backward", "grouped_query_attention_backward"]


def repeat_kv(x: np.ndarray, n_rep: int) -> np.ndarray:
    """Repeat each KV head n_rep times in place (head g -> heads g*n_rep ... g*n_rep + n_rep - 1),
    the order HF's repeat_kv and torch.repeat_interleave(x, n_rep, dim=1) use.

    Shapes: (B, H_kv, T, D) -> (B, H_kv * n_rep, T, D)
    """
    check_ndim("x", x, 4, "(B, H_kv, T, D)")
    check_positive_int("n_rep", n_rep)
    # np.repeat puts the n_rep copies of each head next to each other (np.tile would cycle the
    # heads instead, pairing query head 1 with KV head 1 rather than 0: a silent wrong answer).
    return np.repeat(x, n_rep, axis=1)


def repeat_kv_backward(dy: np.ndarray, n_rep: int) -> np.ndarray:
    """repeat_kv copied head g into n_rep heads, so head g's gradient is the sum of theirs.

    Shapes: (B, H_kv * n_rep, T, D) -> (B, H_kv, T, D)
    """
    B, H, T, D = dy.shape
    return dy.reshape(B, H // n_rep, n_rep, T, D).sum(axis=2)  # inverts the reshape of repeat_kv


def grouped_query_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    scale: float | None = None,
    kernel: str = "steps",
    bias: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(Q K_g^T * scale + bias, masked) V_g, where query head h reads KV head g = h // n_rep.

    mask and bias broadcast over the H query heads, exactly as in attention.scaled_dot_product_attention.

    Shapes: q (B, H, T_q, D), k (B, H_kv, T_k, D), v (B, H_kv, T_k, D_v), mask (bool) and bias
            broadcastable to (B, H, T_q, T_k) -> out (B, H, T_q, D_v), weights (B, H, T_q, T_k)
    """
    n_rep = check_groups(q, k, v)
    return scaled_dot_product_attention(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), mask, scale, kernel, bias)


def grouped_query_attention_backward(dout, q, k, v, weights, scale: float | None = None):
    """Gradients of grouped_query_attention for q, k and v. `weights` is the forward's second output
    (mask and bias are already in it, and neither takes a gradient).

    Shapes: dout (B, H, T_q, D_v), q (B, H, T_q, D), k (B, H_kv, T_k, D), v (B, H_kv, T_k, D_v),
            weights (B, H, T_q, T_k) -> dq (B, H, T_q, D), dk (B, H_kv, T_k, D), dv (B, H_kv, T_k, D_v)
    """
    n_rep = check_groups(q, k, v)
    # out = attention(q, k_rep, v_rep): its backward, with the repeated keys and values
    dq, dk_rep, dv_rep = scaled_dot_product_attention_backward(
        dout, q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), weights, scale)
    # k_rep = repeat_kv(k), v_rep = repeat_kv(v): each KV head sums its group's gradients
    return dq, repeat_kv_backward(dk_rep, n_rep), repeat_kv_backward(dv_rep, n_rep)
