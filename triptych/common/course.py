"""The course's fixed data, shared by the lesson that explains an exercise (triptych/lessons) and
the checker that grades it (triptych/crosscheck/exercises), so both read one copy from below.
Exercise letters and wording: docs/course.md."""
from __future__ import annotations

import numpy as np

# Exercise C (craft queries): its keys and values, rows k_0..k_3 and v_0..v_3 (triptych/lessons/craft_queries.py).
CRAFT_KEYS = np.array([[0.47, 0.65, 0.60],
                       [0.64, 0.50, -0.59],
                       [-0.03, -0.48, -0.88],
                       [0.43, -0.83, 0.35]])
CRAFT_VALUES = np.array([[-0.07, -0.88, 0.47],
                         [0.37, -0.93, -0.07],
                         [-0.25, -0.75, 0.61],
                         [0.94, 0.20, 0.28]])

# Exercise E (reading one value back out of an average, triptych/lessons/subspace.py).
D, M_DIM, P_DIM = 8, 3, 2  # ambient dimension, dim span(a), dim span(b)
N_TOKENS = 4  # tokens 0 and 1 carry v_a and v_b; tokens 2 and 3 carry other values
SEED = 0


def orthonormal_columns(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    """k orthonormal vectors in R^d: the Q of a Gaussian matrix's QR. Shapes: -> (d, k)"""
    q, r = np.linalg.qr(rng.standard_normal((d, k)))
    return q * np.sign(np.diag(r))  # fix the signs so the basis does not depend on LAPACK's choice


def subspace_setup(seed: int = SEED) -> dict:
    """Exercise E's subspaces A (D, M_DIM) and B (D, P_DIM), v_a in span(A), v_b in span(B), N_TOKENS
    orthonormal keys (N_TOKENS, D) and values (N_TOKENS, D) whose first two rows are v_a and v_b."""
    rng = np.random.default_rng(seed)
    basis = orthonormal_columns(rng, D, M_DIM + P_DIM)  # one QR: the two groups are orthogonal to each other
    A, B = basis[:, :M_DIM], basis[:, M_DIM:]
    v_a = A @ rng.standard_normal(M_DIM)
    v_b = B @ rng.standard_normal(P_DIM)
    keys = orthonormal_columns(rng, D, N_TOKENS).T  # (n, D): rows orthonormal
    others = rng.standard_normal((N_TOKENS - 2, D))
    values = np.vstack([v_a, v_b, others])
    return {"A": A, "B": B, "v_a": v_a, "v_b": v_b, "keys": keys, "values": values}
