"""The one tolerance table of the project.

Every comparison in tests and in the CLI is  |a - ref| <= atol + rtol * |ref|  elementwise,
with (atol, rtol) looked up here by (kind, dtype). Loosen an entry only with the reason beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tol:
    atol: float
    rtol: float


TOLERANCES: dict[tuple[str, str], Tol] = {
    # Forward values (attention, masks, projections, positional encodings) vs torch.
    ("value", "float64"): Tol(atol=1e-10, rtol=1e-10),
    # float32 carries ~6e-8 relative rounding per op; attention-sized reductions (d<=512) stay
    # well below 1e-5 absolute on O(1) data, the bar a float32 port is held to.
    ("value", "float32"): Tol(atol=1e-5, rtol=1e-5),
    # Hand-written gradients vs torch autograd / jax.grad (parity_tests/test_grads*.py).
    ("grad", "float64"): Tol(atol=1e-9, rtol=1e-7),
    # float32 gradients go through more reductions (sums over batch and time): 1e-4 relative.
    ("grad", "float32"): Tol(atol=1e-5, rtol=1e-4),
    # Hand-written gradients vs central finite differences (h = 1e-6, float64): truncation error
    # O(h^2 f''') plus rounding O(eps |f| / h) ~ 1e-10 on the O(1) tiny-shape tests.
    ("finite_difference", "float64"): Tol(atol=1e-7, rtol=1e-6),
    # GPT training-loss trajectories (same init, same batches, 20 AdamW steps) across backends, per
    # step. float64 round-off (~1e-16 per op) grows through 20 updates of a chaotic
    # optimiser but stays far below 1e-8 relative; float32 (~6e-8 per op, Adam's g/sqrt(v) amplifies
    # tiny-gradient noise) stays below 1e-3.
    ("trajectory", "float64"): Tol(atol=0.0, rtol=1e-8),
    ("trajectory", "float32"): Tol(atol=0.0, rtol=1e-3),
    # `check` of a user's sinusoidal PositionalEncoding. The reference table is built in float64
    # (semantics.md), but a table built in float32, as torch's tutorial does by default, is not a
    # mistake: sin(pos * w) in float32 drifts by about pos * 3e-8 (4e-6 at pos 128, the longest case),
    # so 1e-5 absolute admits it while every named mistake (positions from 1, sin/cos concatenated,
    # ...) is off by 1e-3 or more.
    ("positional", "float64"): Tol(atol=1e-5, rtol=1e-10),
    ("positional", "float32"): Tol(atol=1e-5, rtol=1e-5),
    # `check` of exercise C/E's crafted queries and keys, judged by the attention output they produce
    # vs the target. A softmax reaches a one-hot or a subset mean only as the score gaps grow, so no
    # finite query is exact; 1e-3 is what the craft_queries lesson promises (score gaps of about 8),
    # 50x stricter than the course's 0.05.
    ("crafted", "float64"): Tol(atol=1e-3, rtol=0.0),
    # `check` of the numeric answers of G.1-G.3 against the accounting calculators: counts are
    # integers and the rest closed-form float64 expressions, so only float64 rounding (1e-16 per
    # operation) separates a right answer; 1e-9 relative leaves room for a different order of the
    # same arithmetic but not for a value rounded by hand to a few digits.
    ("count", "float64"): Tol(atol=0.0, rtol=1e-9),
    # A real pretrained model (SmolLM2-135M) in float32 through our engines vs Hugging Face: 30 layers
    # of float32 accumulation over a residual stream that reaches 2.3e4 in a few channels (the
    # "massive activations" of trained LLMs), so errors scale with the stream, not with O(1) data.
    # Measured on a 46-token prompt: max |err| / (|ref| + 1) = 1.3e-4 (layer 29), logits 6.6e-5 of
    # 31.8. A real bug (a wrong scale, layout, mask) moves values by O(1) relative. float64 keeps the
    # value row's numbers (measured 1.8e-12 on the hidden states, 2.5e-13 on the logits).
    ("real_model", "float32"): Tol(atol=5e-4, rtol=5e-4),
    ("real_model", "float64"): Tol(atol=1e-10, rtol=1e-10),
    # A BERT encoder's hidden states at PADDING positions vs Hugging Face (tests/test_pretrained_minilm.py).
    # Those queries attend only the real keys and nothing reads them (pooling and the key mask skip
    # them), but they are ill-conditioned in float32: after 6 layers ours and HF's each sit ~2e-5
    # from the float64 value there, against ~3e-6 at real tokens (which keep the "value" row). 1e-4
    # is 4x the worst seen (2.5e-5 at |x| ~ 0.3); float64 keeps the "value" row everywhere.
    ("padded_hidden", "float32"): Tol(atol=1e-4, rtol=1e-5),
    # Data-parallel training (several processes or devices, each a slice of the same global batch) vs
    # one process: the same per-example arithmetic, but each gradient is summed in another order
    # (per-slice sums, then the all-reduce), ~1e-7 relative per step, carried through ~20 AdamW
    # steps. Measured with 2 processes (tests/test_finetune_distributed.py): weights usually 2.3e-6
    # off at |w| <= 1.06, losses 6e-8, but once 1.1e-5 (an embedding weight of 0.034 after 21 AdamW
    # steps at lr 1e-2: CPU matmul kernels may sum in another order from run to run, and Adam's
    # g/sqrt(v) amplifies it); with 2 JAX devices (tests/test_jax_data_parallel.py): weights 7.8e-7,
    # losses 4.8e-7 at 2.9. 5e-5 absolute is 4.5x the worst. The bugs it guards against (a slice
    # dropped, the batch doubled, the schedule stepped once per process) change each step by about
    # the learning rate, 1e-2 there.
    ("data_parallel", "float32"): Tol(atol=5e-5, rtol=1e-5),
}


def tolerance(dtype, kind: str = "value") -> Tol:
    """Look up the (atol, rtol) pair for a dtype name or dtype object."""
    name = dtype_name(dtype)
    try:
        return TOLERANCES[(kind, name)]
    except KeyError:
        raise KeyError(f"no tolerance for kind={kind!r}, dtype={name!r}; add it to TOLERANCES") from None


def dtype_name(dtype) -> str:
    """The dtype's plain name ('float32') for NumPy's scalar types and dtype objects, jnp.float32,
    torch.float32, an array, or the name itself."""
    if isinstance(dtype, str):
        return dtype
    if not isinstance(dtype, type):  # an array or tensor: its dtype
        dtype = getattr(dtype, "dtype", dtype)
    if type(dtype).__module__.startswith("torch"):  # torch.float32, whose str() is 'torch.float32'
        return str(dtype).removeprefix("torch.")
    return np.dtype(dtype).name  # np.float32, np.dtype('float32'), jnp.float32 (np.dtype reads its .dtype)


def to_numpy(x) -> np.ndarray:
    """Any backend's array -> NumPy, without going through float32."""
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# The one comparison rule, used by parity (crosscheck/cases.py), the checker (crosscheck/_match.py),
# the lessons and the pretrained traces (pretrained/trace.py): |a - ref| <= atol + rtol*|ref|
# elementwise, where the same infinity on both sides (a masked score of -inf met by -inf) and NaN
# where the reference is NaN count as equal, and any other NaN or infinity is an error of inf.


def errors(a, ref) -> tuple[np.ndarray, np.ndarray]:
    """(|a - ref|, |ref|) elementwise in float64 under the rule above; |ref| is 0 where ref is not
    finite, so an infinite reference never widens its own bound. Same shapes expected."""
    g, r = to_numpy(a).astype(np.float64), to_numpy(ref).astype(np.float64)
    same = (np.isnan(g) & np.isnan(r)) | (np.isinf(r) & (g == r))
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.where(same, 0.0, np.abs(g - r))
    err = np.where(np.isnan(err), np.inf, err)
    return err, np.where(np.isfinite(r), np.abs(r), 0.0)


def compare(a, ref, tol: Tol) -> tuple[bool, float]:
    """(a agrees with ref everywhere under the rule above, max |err|). Another shape fails with an
    error of inf; bool arrays agree only where equal (the error is the count of differences)."""
    a, ref = to_numpy(a), to_numpy(ref)
    if a.shape != ref.shape:
        return False, float("inf")
    if a.dtype == bool or ref.dtype == bool:
        differ = a.astype(bool) != ref.astype(bool)
        return not bool(differ.any()), float(differ.sum())
    if a.size == 0:
        return True, 0.0
    err, size = errors(a, ref)
    return bool(np.all(err <= tol.atol + tol.rtol * size)), float(err.max())


def within(a, ref, tol: Tol) -> bool:
    """True where a agrees with ref everywhere under the rule above."""
    return compare(a, ref, tol)[0]


def used(a, ref, tol: Tol) -> float:
    """The worst |err| / (atol + rtol*|ref|) under the rule above: <= 1 passes (0 for no elements)."""
    err, size = errors(a, ref)
    if err.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / (tol.atol + tol.rtol * size))
    return float(ratio.max())


def max_abs_err(a, ref) -> float:
    a, ref = to_numpy(a), to_numpy(ref)
    if a.shape != ref.shape:
        raise ValueError(f"cannot compare: shape {a.shape} vs reference shape {ref.shape}")
    if a.size == 0:
        return 0.0
    return float(errors(a, ref)[0].max())


def assert_close(a, ref, dtype=None, kind: str = "value", what: str = "") -> None:
    """Raise AssertionError with the worst element when a and ref disagree beyond the table."""
    dtype = dtype if dtype is not None else to_numpy(ref).dtype
    tol = tolerance(dtype, kind)
    if not within(a, ref, tol):
        a_np, r_np = to_numpy(a).astype(np.float64), to_numpy(ref).astype(np.float64)
        if a_np.shape != r_np.shape:
            raise AssertionError(f"{what}: shape {a_np.shape} != reference shape {r_np.shape}")
        err, size = errors(a_np, r_np)
        excess = err - (tol.atol + tol.rtol * size)
        i = np.unravel_index(np.argmax(excess), excess.shape)
        raise AssertionError(
            f"{what or 'values'} differ beyond {kind}/{dtype_name(dtype)} tolerance "
            f"(atol={tol.atol:g}, rtol={tol.rtol:g}): at {tuple(int(j) for j in i)} "
            f"got {float(a_np[i])!r}, reference {float(r_np[i])!r}; max abs err {max_abs_err(a_np, r_np):.3e}"
        )
