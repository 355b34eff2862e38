"""Courses C-E with one classic slip per answer (the test names each)."""
import numpy as np

K = np.array([[0.47, 0.65, 0.60], [0.64, 0.50, -0.59], [-0.03, -0.48, -0.88], [0.43, -0.83, 0.35]])

query_v0 = K[0]  # the key itself, unscaled: the right direction, gaps too small
query_mean_01 = 4 * (K[0] + K[1])  # keys of unequal length: tokens 0 and 1 do not tie exactly


def key2_mean_012(K, V):
    return K[2]  # left as it was


def argmax_attention(q, K, V):
    s = q @ K.T
    w = np.exp(s - s.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)) @ V  # still a softmax


def subspace_reader(A, B):
    return A @ A.T  # the projector, without the 2


def averaging_query(K, S):
    return S * K.sum(axis=0)  # every key, not just the two wanted
