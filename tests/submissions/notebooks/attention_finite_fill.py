#!/usr/bin/env python
# coding: utf-8

# # Homework 3: causal self-attention in NumPy

# In[ ]:


import numpy as np
np.random.seed(0)
NEG_INF = -1e9  # big negative number instead of -inf, so nothing turns into NaN


# In[ ]:


def make_causal_mask(n_tok):
    return np.tril(np.ones((n_tok, n_tok))).astype(bool)


def apply_causal_mask(mask, A):
    return np.where(mask, A, NEG_INF)


# In[ ]:


def attn_softmax(A):
    A = A - A.max(axis=-1, keepdims=True)
    w = np.exp(A)
    return w / w.sum(axis=-1, keepdims=True)


def self_attention(Q, K, V, n_heads=1, causal=True):
    B, T, C = Q.shape
    d = C // n_heads
    q = Q.reshape(B, T, n_heads, d).transpose(0, 2, 1, 3)
    k = K.reshape(B, T, n_heads, d).transpose(0, 2, 1, 3)
    v = V.reshape(B, T, n_heads, d).transpose(0, 2, 1, 3)
    A = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    if causal:
        A = apply_causal_mask(make_causal_mask(T), A)
    out = attn_softmax(A) @ v
    return out.transpose(0, 2, 1, 3).reshape(B, T, C)


# In[ ]:


get_ipython().run_cell_magic('time', '', 'out = self_attention(Qs, Ks, Vs, n_heads=4)\nprint(out.shape)\n')


# In[ ]:


assert np.allclose(self_attention(Q_test, K_test, V_test), expected), "mismatch!"
