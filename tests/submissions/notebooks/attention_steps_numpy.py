#!/usr/bin/env python
# coding: utf-8

# In[1]:


get_ipython().run_line_magic('load_ext', 'autoreload')
get_ipython().run_line_magic('autoreload', '2')
import numpy as np


# In[2]:


def pairwise_similarities(Q, K):
    return Q @ np.swapaxes(K, -1, -2)


def attn_scaled(A, n_embd, n_heads):
    return A / np.sqrt(n_embd / n_heads)


# In[3]:


def attn_softmax(A):
    A_max = np.max(A, axis=-1, keepdims=True)
    e = np.exp(A - A_max)
    return e / np.sum(e, axis=-1, keepdims=True)


def compute_outputs(A, V):
    return A @ V


# In[4]:


print(A_test.shape)
attn_softmax(A_test).sum(-1)


# In[5]:


def make_causal_mask(n_tok):
    return np.tril(np.ones((n_tok, n_tok), dtype=bool))


def apply_causal_mask(mask, A):
    return np.where(mask, A, -np.inf)


# In[6]:


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def merge_heads(y):
    B, H, T, D = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, H * D)


def split_heads_qkv(Q, K, V, n_heads):
    return tuple(split_heads(t, n_heads) for t in (Q, K, V))


def self_attention(Q, K, V, n_heads=1, causal=True):
    n_tok, n_embd = Q.shape[1], Q.shape[2]
    q, k, v = split_heads_qkv(Q, K, V, n_heads)
    A = attn_scaled(pairwise_similarities(q, k), n_embd, n_heads)
    if causal:
        A = apply_causal_mask(make_causal_mask(n_tok), A)
    return merge_heads(compute_outputs(attn_softmax(A), v))


# In[7]:


# ## Bonus: rotary positions (tables in float32 to save memory)

def apply_rope(x, positions=None, base=10000.0, layout="half"):
    T, D = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = np.arange(T)
    inv_freq = 1.0 / (base ** (np.arange(0, D, 2, dtype=np.float32) / D))
    angles = np.asarray(positions, dtype=np.float32)[..., None] * inv_freq
    cos, sin = np.cos(angles), np.sin(angles)
    if np.ndim(positions) == 2:  # (B, T): one row of positions per sequence, broadcast over heads
        cos, sin = cos[:, None], sin[:, None]
    if layout == "half":
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


# In[8]:


get_ipython().run_line_magic('timeit', 'self_attention(Q_big, K_big, V_big, n_heads=12)')
