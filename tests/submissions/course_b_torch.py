"""Course B in torch, written as a student would (a correct solution; tests grade it)."""
import math
import torch
import torch.nn.functional as F
DEVICE = "cpu"

def pairwise_similarities(Q, K):
    return Q @ K.transpose(-2, -1)

def attn_scaled(A, n_embd, n_heads):
    return A / math.sqrt(n_embd / n_heads)

def attn_softmax(A):
    return torch.softmax(A, dim=-1)

def compute_outputs(A, V):
    return A @ V

def make_causal_mask(n_tok):
    return torch.tril(torch.ones(n_tok, n_tok))

def apply_causal_mask(mask, A):
    return A.masked_fill(mask == 0, float("-inf"))

def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)

def merge_heads(y):
    B, nh, T, hs = y.shape
    return y.transpose(1, 2).contiguous().view(B, T, nh * hs)

def split_heads_qkv(Q, K, V, n_heads):
    return split_heads(Q, n_heads), split_heads(K, n_heads), split_heads(V, n_heads)

def self_attention(Q, K, V, n_heads=1, causal=True):
    n_embd = Q.shape[-1]
    Q, K, V = split_heads_qkv(Q, K, V, n_heads)
    A = attn_scaled(pairwise_similarities(Q, K), n_embd, n_heads)
    if causal:
        A = apply_causal_mask(make_causal_mask(Q.shape[2]), A)
    return merge_heads(compute_outputs(attn_softmax(A), V))

