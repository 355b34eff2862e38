"""Exercise E: reading one value back out of an average.

Part 1. v_a lies in span(a_1..a_m), v_b in span(b_1..b_p); all basis vectors are orthonormal and the
two subspaces orthogonal. With A = [a_1 .. a_m] the projector onto span(A) is P_A = A A^T, so

    M = 2 P_A:   M (v_a + v_b)/2 = P_A v_a + P_A v_b = v_a + 0 = v_a

(P_A v_a = v_a because v_a is in the subspace; P_A v_b = A (A^T B) beta = 0 by orthogonality).

Part 2. Attention can BUILD that average: with orthonormal keys, q = S (k_a + k_b) scores S on the
two wanted tokens and 0 on every other token (k_j . k_a = 0), so with n tokens

    weights = e^S / (2 e^S + n - 2) on a and b,   1 / (2 e^S + n - 2) on each other token
    out - (v_a + v_b)/2 = (n - 2) / (2 e^S + n - 2) * (mean of the other values - (v_a + v_b)/2)

The average is reached EXACTLY iff the other tokens contribute nothing net: n = 2 (any q with equal
scores, even q = 0), or the other values average to (v_a + v_b)/2. Otherwise only as S -> infinity.
"""
from __future__ import annotations

import numpy as np

from triptych.common.course import (  # exercise E's sizes and data, shared with its grader
    D, M_DIM, N_TOKENS, P_DIM, SEED, subspace_setup as setup,
)

S_GRID = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 40.0)


def averaging_query(keys: np.ndarray, S: float) -> np.ndarray:
    """q = S (k_0 + k_1): equal scores S on tokens 0 and 1, 0 on the rest (orthonormal keys)."""
    return S * (keys[0] + keys[1])


def predicted_error(values: np.ndarray, S: float) -> float:
    """max |out - avg| from the closed form in the module docstring."""
    n = len(values)
    avg = (values[0] + values[1]) / 2
    if n == 2:
        return 0.0
    rest = values[2:].mean(axis=0)
    return float(np.max(np.abs((n - 2) / (2 * np.exp(S) + n - 2) * (rest - avg))))


def compute(seed: int = SEED) -> dict:
    import jax.numpy as jnp
    import torch

    import jax_impl.attention as ja
    import torch_ref.attention as ta
    from numpy_impl.attention import scaled_dot_product_attention

    s = setup(seed)
    A, B, v_a, v_b = s["A"], s["B"], s["v_a"], s["v_b"]
    P = A @ A.T
    M = 2.0 * P
    x = (v_a + v_b) / 2
    read = M @ x
    extraction = {
        "numpy": float(np.max(np.abs(read - v_a))),
        "jax": float(np.max(np.abs(np.asarray(2.0 * (jnp.asarray(A) @ jnp.asarray(A).T) @ jnp.asarray(x)) - v_a))),
        "torch": float((2.0 * (torch.from_numpy(A) @ torch.from_numpy(A).T) @ torch.from_numpy(x)
                        - torch.from_numpy(v_a)).abs().max()),
    }
    identities = {
        "A^T A = I": float(np.max(np.abs(A.T @ A - np.eye(M_DIM)))),
        "A^T B = 0": float(np.max(np.abs(A.T @ B))),
        "P^2 = P": float(np.max(np.abs(P @ P - P))),
        "P^T = P": float(np.max(np.abs(P.T - P))),
        "P v_a = v_a": float(np.max(np.abs(P @ v_a - v_a))),
        "P v_b = 0": float(np.max(np.abs(P @ v_b))),
        "K K^T = I (keys)": float(np.max(np.abs(s["keys"] @ s["keys"].T - np.eye(N_TOKENS)))),
    }

    keys, values = s["keys"], s["values"]
    avg = (values[0] + values[1]) / 2
    table = []
    for S in S_GRID:
        q = averaging_query(keys, S)[None, :]
        out, w = scaled_dot_product_attention(q, keys, values, scale=1.0)
        table.append({"S": S, "weights": w[0].tolist(), "error": float(np.max(np.abs(out[0] - avg))),
                      "predicted": predicted_error(values, S),
                      "read_error": float(np.max(np.abs(M @ out[0] - v_a)))})
    S_show = 16.0
    q = averaging_query(keys, S_show)[None, :]
    backends = {
        "numpy": float(np.max(np.abs(scaled_dot_product_attention(q, keys, values, scale=1.0)[0][0] - avg))),
        "jax": float(np.max(np.abs(np.asarray(ja.scaled_dot_product_attention(
            jnp.asarray(q), jnp.asarray(keys), jnp.asarray(values), scale=1.0)[0])[0] - avg))),
        "torch": float(np.max(np.abs(ta.scaled_dot_product_attention(
            torch.from_numpy(q), torch.from_numpy(keys), torch.from_numpy(values), scale=1.0)[0].numpy()[0] - avg))),
    }
    # The exact case: only the two wanted tokens present. Equal scores give exactly 1/2, 1/2, even for q = 0.
    two_out, two_w = scaled_dot_product_attention(np.zeros((1, D)), keys[:2], values[:2], scale=1.0)
    return {
        "seed": seed, "dims": {"d": D, "m": M_DIM, "p": P_DIM, "n_tokens": N_TOKENS},
        "v_a": v_a.tolist(), "v_b": v_b.tolist(), "average": x.tolist(), "M_times_average": read.tolist(),
        "extraction_error": extraction["numpy"], "extraction_backends": extraction, "identities": identities,
        "M": M.tolist(), "scale_table": table, "backends_at_S": {"S": S_show, **backends},
        "two_token_error": float(np.max(np.abs(two_out[0] - avg))), "two_token_weights": two_w[0].tolist(),
    }


def passed(result: dict) -> bool:
    """The read-out is exact up to float64 rounding in every backend, and the closed form holds."""
    from triptych.common.tolerances import tolerance

    tol = tolerance("float64")
    return (max(result["extraction_backends"].values()) <= tol.atol
            and all(abs(r["error"] - r["predicted"]) <= tol.atol for r in result["scale_table"]))


def plot(result: dict, path) -> None:
    from triptych.lessons import _render as R

    fig, ax = R.figure()
    ax = ax[0, 0]
    S = [r["S"] for r in result["scale_table"]]
    computed, predicted = [r["error"] for r in result["scale_table"]], [r["predicted"] for r in result["scale_table"]]
    ax.plot(S, computed, "o", label="computed")
    ax.plot(S, predicted, "-", label="closed form")
    R.log_axis_keeping_zero(ax, computed + predicted)  # an exact 0 is drawn at 0, not at a made-up 1e-17
    ax.set_xlabel("query scale S in q = S (k_a + k_b)")
    ax.set_ylabel("max |out - (v_a + v_b)/2|")
    ax.set_title("Exercise E: averaging query, error vs scale")
    ax.legend()
    R.save_figure(fig, path)


def to_json(result: dict) -> dict:
    keep = ("extraction_error", "extraction_backends", "identities", "scale_table", "backends_at_S",
            "two_token_error", "dims", "seed")
    return {k: result[k] for k in keep}


def render(result: dict, console) -> None:
    from triptych.lessons import _render as R

    d = result["dims"]
    ids = [(k, R.err(v)) for k, v in result["identities"].items()]
    eb = result["extraction_backends"]
    console.print(R.panel(
        "E.1 Reading v_a out of (v_a + v_b)/2 with M = 2 A A^T",
        f"random orthonormal bases (QR of a Gaussian matrix, seed {result['seed']}): a_1..a_{d['m']} and "
        f"b_1..b_{d['p']} in R^{d['d']}, the two groups orthogonal",
        R.code(f"v_a             = {R.vec(result['v_a'])}"),
        R.code(f"v_b             = {R.vec(result['v_b'])}"),
        R.code(f"(v_a + v_b) / 2 = {R.vec(result['average'])}"),
        R.code(f"M (v_a + v_b)/2 = {R.vec(result['M_times_average'])}"),
        R.table(["identity", "max |error|"], ids, title="why it works, checked numerically"),
        R.note(f"max |M (v_a + v_b)/2 - v_a| = {R.err(eb['numpy'])} in NumPy, {R.err(eb['jax'])} in JAX, "
               f"{R.err(eb['torch'])} in torch: rounding only. M keeps span(a) twice over (undoing the 1/2) and "
               "sends span(b) to 0. Any M that equals 2I on span(a) and 0 on span(b) works; 2 A A^T is the one "
               "that is also 0 on everything else.", style="bold"),
    ))
    rows = [(R.num(r["S"], 0), R.vec(r["weights"], 6), R.err(r["error"]), R.err(r["predicted"]), R.err(r["read_error"]))
            for r in result["scale_table"]]
    b = result["backends_at_S"]
    console.print(R.panel(
        f"E.2 Orthonormal keys ({d['n_tokens']} tokens): q = S (k_0 + k_1) averages v_a and v_b",
        R.note("scores are S, S, 0, 0 (orthonormal keys), so tokens 0 and 1 share the weight equally and the "
               "other tokens keep 1 / (2 e^S + n - 2) each"),
        R.table(["S", "weights", "max |out - avg|", "closed form", "max |M out - v_a|"], rows,
                title="error vs the query's scale"),
        f"at S = {R.num(b['S'], 0)}: NumPy {R.err(b['numpy'])}, JAX {R.err(b['jax'])}, torch {R.err(b['torch'])}",
        R.note(f"Exact condition: the output equals (v_a + v_b)/2 exactly iff sum over other tokens of "
               f"w_j (v_j - avg) = 0: with only the two tokens present any q with equal scores works, even q = 0 "
               f"(weights {R.vec(result['two_token_weights'], 2)}, error {R.err(result['two_token_error'])}); "
               "with other tokens present that holds only if their values average to avg, otherwise the error "
               "shrinks like e^-S and the average is reached only in the limit (in floating point, once "
               "e^-S drops below rounding).", style="bold"),
    ))
