#!/usr/bin/env python
# coding: utf-8

# # Attention, one step at a time
# Exported from Colab (File > Download > .py).

# In[1]:


get_ipython().system('pip install -q torch matplotlib')


# In[2]:


import math

import matplotlib.pyplot as plt
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
print("running on", DEVICE)
get_ipython().run_line_magic('matplotlib', 'inline')


# In[3]:


def pairwise_similarities(Q, K):
    Q, K = Q.to(DEVICE), K.to(DEVICE)
    return (Q @ K.transpose(-2, -1)).cpu()


# In[4]:


def attn_scaled(A, n_embd, n_heads):
    A = A.to(DEVICE)
    d_head = n_embd // n_heads
    return (A / torch.sqrt(torch.tensor(d_head))).cpu()


# In[5]:


def attn_softmax(A):
    return torch.softmax(A.to(DEVICE), dim=-1).cpu()


def compute_outputs(A, V):
    return (A.to(DEVICE) @ V.to(DEVICE)).cpu()


# In[6]:


# sanity check from the cell I deleted
print(scores.shape, weights.sum(-1))


# In[7]:


def make_causal_mask(n_tok):
    return torch.tril(torch.ones(n_tok, n_tok, device=DEVICE))


def apply_causal_mask(mask, A):
    return A.to(DEVICE).masked_fill(mask == 0, float("-inf")).cpu()


# In[8]:


def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)


def merge_heads(y):
    B, H, T, D = y.shape
    return y.transpose(1, 2).reshape(B, T, H * D)


def split_heads_qkv(Q, K, V, n_heads):
    return split_heads(Q, n_heads), split_heads(K, n_heads), split_heads(V, n_heads)


# In[9]:


def self_attention(Q, K, V, n_heads=1, causal=True):
    n_tok, n_embd = Q.shape[-2], Q.shape[-1]
    q, k, v = split_heads_qkv(Q.to(DEVICE), K.to(DEVICE), V.to(DEVICE), n_heads)
    A = attn_scaled(pairwise_similarities(q, k), n_embd, n_heads)
    if causal:
        A = apply_causal_mask(make_causal_mask(n_tok), A)
    return merge_heads(compute_outputs(attn_softmax(A), v)).cpu()


# In[10]:


torch.manual_seed(447)
key, value, query = torch.randn(1, 10, 6), torch.randn(1, 10, 6), torch.randn(1, 10, 6)
out = self_attention(query, key, value, n_heads=3)
plt.imshow(attn_softmax(attn_scaled(pairwise_similarities(query, key), 6, 1))[0].numpy())
print(out.shape, expected_out.shape, (out - expected_out).abs().max())
