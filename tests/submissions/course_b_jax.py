"""Course B in JAX, written as a student would (a correct solution; tests grade it).
This one uses the bool True = may attend mask convention."""
import math

import jax
import jax.numpy as jnp


def pairwise_similarities(Q, K):
    return Q @ jnp.swapaxes(K, -1, -2)


def attn_scaled(A, n_embd, n_heads):
    return A / math.sqrt(n_embd / n_heads)


def attn_softmax(A):
    return jax.nn.softmax(A, axis=-1)


def compute_outputs(A, V):
    return A @ V


def make_causal_mask(n_tok):
    return jnp.tril(jnp.ones((n_tok, n_tok), dtype=bool))


def apply_causal_mask(mask, A):
    return jnp.where(mask, A, -jnp.inf)


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)


def split_heads_qkv(Q, K, V, n_heads):
    return split_heads(Q, n_heads), split_heads(K, n_heads), split_heads(V, n_heads)


def self_attention(Q, K, V, n_heads=1, causal=True):
    n_embd = Q.shape[-1]
    Q, K, V = split_heads_qkv(Q, K, V, n_heads)
    A = attn_scaled(pairwise_similarities(Q, K), n_embd, n_heads)
    if causal:
        A = apply_causal_mask(make_causal_mask(Q.shape[2]), A)
    return merge_heads(compute_outputs(attn_softmax(A), V))
