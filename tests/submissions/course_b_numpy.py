"""Course B in NumPy, written as a student would (a correct solution; tests grade it).
This one uses the bool True = blocked mask convention, to show it is accepted."""
import math

import numpy as np


def pairwise_similarities(Q, K):
    return Q @ np.swapaxes(K, -1, -2)


def attn_scaled(A, n_embd, n_heads):
    return A / math.sqrt(n_embd / n_heads)


def attn_softmax(A):
    e = np.exp(A - A.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def compute_outputs(A, V):
    return A @ V


def make_causal_mask(n_tok):
    return np.triu(np.ones((n_tok, n_tok), dtype=bool), k=1)  # True = blocked


def apply_causal_mask(mask, A):
    return np.where(mask, -np.inf, A)


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def split_heads_qkv(Q, K, V, n_heads):
    return tuple(split_heads(t, n_heads) for t in (Q, K, V))


def self_attention(Q, K, V, n_heads=1, causal=True):
    n_embd = Q.shape[-1]
    Q, K, V = split_heads_qkv(Q, K, V, n_heads)
    A = attn_scaled(pairwise_similarities(Q, K), n_embd, n_heads)
    if causal:
        A = apply_causal_mask(make_causal_mask(Q.shape[2]), A)
    return merge_heads(compute_outputs(attn_softmax(A), V))
