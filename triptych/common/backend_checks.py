"""The argument checks of the backends' functions, written once and called by numpy_impl, jax_impl
and torch_ref, so the same bad call is refused in the same words by all three (by construction,
not by keeping three copies in step).

They read only `.shape`, `.dtype` and Python values. The one check that reads array values (no NaN
or inf) takes the backend's own reader, `finite_each(*arrays) -> [bool, ...]`, so no backend
converts its arrays to another's; None skips it (a caller that leaves values to a later kernel).
tests/test_backend_checks.py asserts the three backends raise the identical message.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral

import numpy as np

from triptych.common.checks import (
    InputError,
    check_broadcastable,
    check_finite,
    check_float,
    check_min_ndim,
    check_ndim,
    check_nonempty,
    check_positive_int,
    check_same,
    check_shape,
)
from triptych.common.params import MHA_KEYS

FiniteEach = Callable[..., Sequence[bool]]

# The SwiGLU MLP's weights, the same keys in the three backends (HF LlamaMLP's gate/up/down_proj).
SWIGLU_KEYS = ("w_gate", "w_up", "w_down")


def numpy_finite_each(*xs) -> list[bool]:
    """NumPy's value reader for the checks below (jax_impl and torch_ref have their own in _checks.py)."""
    return [bool(np.isfinite(x).all()) for x in xs]


def _values(named, finite_each: FiniteEach | None) -> None:
    if finite_each is None:
        return
    for (name, _), finite in zip(named, finite_each(*(x for _, x in named))):
        check_finite(name, finite)


def check_qkv(q, k, v=None, finite_each: FiniteEach | None = None) -> None:
    """Attention's q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v): floating point, a non-empty
    sequence axis, the same head size for q and k, the same T_k for k and v; then (if finite_each
    is given) no NaN or inf. Shapes first, values last: a wrong shape is named before a NaN."""
    named = (("q", q), ("k", k)) + ((("v", v),) if v is not None else ())
    for name, x in named:
        check_min_ndim(name, x, 2, "(..., T, D)")
        check_float(name, x)
        check_nonempty(name, x, -2, "sequence (T)")
    check_same("k", k.shape[-1], "q's last axis (d_head)", q.shape[-1], "last-axis size")
    if v is not None:
        check_same("v", v.shape[-2], "k's sequence axis (T_k)", k.shape[-2], "sequence length")
    _values(named, finite_each)


def check_flash(q, k, v, causal, finite_each: FiniteEach | None) -> None:
    """flash_attention/fast_attention's inputs: check_qkv, q, k and v sharing their leading axes
    (the tiled kernels do not broadcast them), and causal a bool (NumPy's bool_ too)."""
    check_qkv(q, k, v, finite_each)
    for name, x in (("k", k), ("v", v)):
        if tuple(x.shape[:-2]) != tuple(q.shape[:-2]):
            raise InputError(f"{name}: expected leading axes {tuple(q.shape[:-2])} (as q), got {tuple(x.shape[:-2])}")
    if not isinstance(causal, (bool, np.bool_)):
        raise InputError(f"causal: expected True or False, got {causal!r}")


def check_bias(bias, expected_shape, finite_each: FiniteEach | None) -> None:
    """An additive score bias: floating point, broadcastable to (..., T_q, T_k), finite (-inf
    belongs in the bool mask, which keeps fully masked rows at zero)."""
    check_float("bias", bias)
    check_broadcastable("bias", bias, tuple(expected_shape), "(an additive score bias)")
    _values((("bias", bias),), finite_each)


def check_groups(q, k, v) -> int:
    """Grouped-query attention: q (B, H, T_q, D) and k, v (B, H_kv, T_k, D) with H_kv dividing H;
    returns n_rep = H / H_kv. Head size, T_k and values are left to check_qkv."""
    check_ndim("q", q, 4, "(B, H, T_q, D)")
    check_ndim("k", k, 4, "(B, H_kv, T_k, D)")
    check_ndim("v", v, 4, "(B, H_kv, T_k, D_v)")
    check_same("k", k.shape[0], "q's batch axis (B)", q.shape[0], "batch size")
    check_same("v", v.shape[1], "k's head axis (H_kv)", k.shape[1], "head count")
    n_heads, n_kv = int(q.shape[1]), int(k.shape[1])
    if n_kv == 0 or n_heads % n_kv != 0:
        raise InputError(f"k: expected a number of KV heads dividing q's {n_heads} heads, got {n_kv}")
    return n_heads // n_kv


def check_offset(offset) -> None:
    """A mask's diagonal offset: any integer (Python's or NumPy's), not a bool."""
    if isinstance(offset, bool) or not isinstance(offset, Integral):
        raise InputError(f"offset: expected an integer, got {offset!r}")


def check_t_past(t_past) -> None:
    """How many positions a KV cache already holds: an integer >= 0."""
    if isinstance(t_past, bool) or not isinstance(t_past, Integral) or t_past < 0:
        raise InputError(f"t_past: expected a non-negative integer, got {t_past!r}")


def check_mha_params(params: dict, d_model: int) -> None:
    """Multi-head attention's params (triptych/common/params.py): every key of MHA_KEYS, weights
    (d_model, d_model) and biases (d_model,)."""
    missing = [k for k in MHA_KEYS if not isinstance(params, dict) or k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(MHA_KEYS)}, missing {missing}")
    for k in MHA_KEYS:
        check_shape(f"params['{k}']", params[k], (d_model, d_model) if k.startswith("w") else (d_model,))


def check_sequence(name: str, x, d_model: int | None = None, finite_each: FiniteEach | None = None) -> None:
    """A batch of sequences (B, T, C): floating point, T > 0, C = d_model if given, finite."""
    check_ndim(name, x, 3, "(B, T, C)")
    check_float(name, x)
    check_nonempty(name, x, 1, "sequence (T)")
    if d_model is not None:
        check_same(name, x.shape[-1], "d_model", d_model, "last-axis size")
    _values(((name, x),), finite_each)


def check_even(name: str, d: int, what: str) -> None:
    """A positive, even size: `what` (sinusoidal encoding, RoPE) pairs sin/cos channels."""
    check_positive_int(name, d)
    if d % 2:
        raise InputError(f"{name}: expected an even size ({what} pairs sin/cos channels), got {d}")


def check_positions(x, positions) -> None:
    """positions (T,) for every sequence alike, or (B, T): one row per sequence of a (B, ..., T, D)
    x (packed sequences, or a KV cache whose sequences sit at different offsets)."""
    check_ndim("positions", positions, (1, 2), "(T,) or (B, T)")
    check_same("positions", positions.shape[-1], "x's sequence axis (T)", x.shape[-2], "length")
    if len(positions.shape) == 2:
        check_min_ndim("x", x, 3, "(B, ..., T, D) for (B, T) positions")
        check_same("positions", positions.shape[0], "x's batch axis (B)", x.shape[0], "batch size")


def check_rope_rows(w, n_heads: int) -> None:
    """A projection weight whose first axis holds n_heads heads of even size (for RoPE's pairs)."""
    check_min_ndim("w", w, 1, "(n_heads * D, ...)")
    check_positive_int("n_heads", n_heads)
    if w.shape[0] % n_heads or (w.shape[0] // n_heads) % 2:
        raise InputError(f"w: expected a first axis of n_heads={n_heads} heads of even size, got shape "
                         f"{tuple(int(s) for s in w.shape)}")


def check_blocks(block_q, block_k) -> None:
    """The tile sizes of flash attention: positive integers (torch_ref accepts and ignores them)."""
    check_positive_int("block_q", block_q)
    check_positive_int("block_k", block_k)


def check_swiglu(x, params: dict, finite_each: FiniteEach | None) -> tuple[int, int]:
    """The SwiGLU MLP's x (..., d) and params w_gate (d_ff, d), w_up (d_ff, d), w_down (d, d_ff). Returns (d, d_ff)."""
    check_min_ndim("x", x, 1, "(..., d)")
    check_float("x", x)
    missing = [k for k in SWIGLU_KEYS if not isinstance(params, dict) or k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(SWIGLU_KEYS)}, missing {missing}")
    d = int(x.shape[-1])
    check_shape("params['w_gate']", params["w_gate"], (None, d))
    d_ff = int(params["w_gate"].shape[0])
    check_shape("params['w_up']", params["w_up"], (d_ff, d))
    check_shape("params['w_down']", params["w_down"], (d, d_ff))
    _values((("x", x),), finite_each)
    return d, d_ff


def check_layers(layers, d_model: int, n_heads: int, n_kv_heads: int) -> None:
    """A KV-cache decoder's layers: w_q (H*D, C), w_k and w_v (H_kv*D, C), w_o (C, H*D), the shapes
    of HF Llama's q_proj, k_proj, v_proj and o_proj weights (x @ W.T, no biases)."""
    check_positive_int("n_heads", n_heads)
    check_positive_int("n_kv_heads", n_kv_heads)
    if n_heads % n_kv_heads:
        raise InputError(f"n_kv_heads: expected a divisor of n_heads={n_heads}, got {n_kv_heads}")
    for i, p in enumerate(layers):
        width = int(p["w_q"].shape[0])
        if width % n_heads:
            raise InputError(f"layers[{i}]['w_q']: expected a row count divisible by n_heads={n_heads}, got {width}")
        d_head = width // n_heads
        for key, shape in (("w_q", (width, d_model)), ("w_k", (n_kv_heads * d_head, d_model)),
                           ("w_v", (n_kv_heads * d_head, d_model)), ("w_o", (d_model, width))):
            check_shape(f"layers[{i}]['{key}']", p[key], shape)
