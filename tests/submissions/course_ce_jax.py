"""Courses C-E in JAX, with the crafted answers as plain lists (numbers a student worked out)."""
import jax.numpy as jnp

query_v0 = [9.4, 13.0, 12.0]  # 20 k_0, written out
query_mean_all = [0.0, 0.0, 0.0]


def query_identity(K, V):
    return 20.0 * K


def query_mean_01(K, V):
    u = K[0] - K[1]
    w = K[0] + K[1]
    return 40.0 * (w - jnp.dot(w, u) / jnp.dot(u, u) * u)


def key2_mean_012(K, V):
    return K[0]


def key2_unit_v2(K, V):
    q = query_mean_01(K, V)
    return q / jnp.linalg.norm(q)


def argmax_attention(q, K, V):
    return V[jnp.argmax(q @ K.T, axis=-1)]


def subspace_reader(A, B):
    return 2.0 * A @ A.T


def averaging_query(K, S):
    return S * (K[0] + K[1])
