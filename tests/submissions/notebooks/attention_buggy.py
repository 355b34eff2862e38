#!/usr/bin/env python
# coding: utf-8

# In[1]:


import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


# In[2]:


def softmax(x, dim=-1):
    e = torch.exp(x.to(DEVICE))
    return (e / e.sum(dim=dim, keepdim=True)).cpu()


# In[3]:


def scaled_dot_product_attention(Q, K, V, mask=None):
    d_k = K.shape[-1]
    scores = Q @ K.transpose(-2, -1) / d_k ** 0.5
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ V


# In[4]:


print(scaled_dot_product_attention(q, k, v).shape)
