"""Input checks shared by the three backends, so a bad call reads the same everywhere.

Each check raises InputError (a ValueError) naming the argument, what was expected and what came.
They look only at `.shape` and `.dtype`, which NumPy, JAX and torch arrays all have; the finite-value
check takes the backend's own `all(isfinite(x))` result so no backend converts to another.
"""
from __future__ import annotations

import math

from collections.abc import Sequence
from numbers import Integral


class InputError(ValueError):
    """A caller passed something the function cannot accept. The CLI turns it into exit code 2."""


def _shape_str(shape) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def shape_of(x) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def dtype_str(x) -> str:
    return str(x.dtype).replace("torch.", "")


def check_ndim(name: str, x, ndim: int | Sequence[int], meaning: str = "") -> None:
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if len(x.shape) not in allowed:
        want = " or ".join(str(n) for n in allowed)
        extra = f" {meaning}" if meaning else ""
        raise InputError(f"{name}: expected a {want}-D array{extra}, got shape {_shape_str(shape_of(x))}")


def check_min_ndim(name: str, x, ndim: int, meaning: str = "") -> None:
    if len(x.shape) < ndim:
        extra = f" {meaning}" if meaning else ""
        raise InputError(f"{name}: expected at least {ndim} dimensions{extra}, got shape {_shape_str(shape_of(x))}")


def check_shape(name: str, x, expected: Sequence[int | None]) -> None:
    """expected holds ints or None (any size); the number of axes must match exactly."""
    got = shape_of(x)
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise InputError(f"{name}: expected shape {_shape_str(expected)}, got {_shape_str(got)}")


def check_same(name: str, value: int, other_name: str, other: int, what: str = "size") -> None:
    if value != other:
        raise InputError(f"{name}: expected {what} {other} to match {other_name}, got {value}")


def check_nonempty(name: str, x, axis: int, axis_name: str) -> None:
    if x.shape[axis] == 0:
        raise InputError(f"{name}: expected a non-empty {axis_name} axis, got shape {_shape_str(shape_of(x))}")


def check_float(name: str, x) -> None:
    if "float" not in dtype_str(x):
        raise InputError(f"{name}: expected a floating-point array, got dtype {dtype_str(x)}")


def check_finite(name: str, all_finite: bool) -> None:
    if not bool(all_finite):
        raise InputError(f"{name}: expected finite values, got NaN or inf")


def check_heads(d_model: int, n_heads: int) -> None:
    if not isinstance(n_heads, int) or n_heads <= 0:
        raise InputError(f"n_heads: expected a positive integer, got {n_heads!r}")
    if d_model % n_heads != 0:
        raise InputError(f"n_heads: expected a divisor of d_model={d_model}, got {n_heads}")


def check_positive_int(name: str, value) -> None:
    # Integral takes NumPy's integer scalars too (a shape entry, a loop counter); bool is refused.
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")


def check_mask(name: str, mask, expected_shape: Sequence[int]) -> None:
    """A mask is boolean (True = may attend) and broadcasts to expected_shape (..., T_q, T_k)."""
    if dtype_str(mask) != "bool":
        raise InputError(f"{name}: expected dtype bool (True = may attend), got dtype {dtype_str(mask)}")
    got = shape_of(mask)
    exp = tuple(expected_shape)
    ok = len(got) <= len(exp) and all(g in (1, e) for g, e in zip(reversed(got), reversed(exp)))
    if not ok or len(got) < 2:
        raise InputError(
            f"{name}: expected a shape broadcastable to {_shape_str(exp)} with (T_q, T_k) last, got {_shape_str(got)}"
        )


def check_choice(name: str, value, choices: Sequence[str]) -> None:
    """A string option (kernel="steps", layout="half"): one of a fixed set, named in the message."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise InputError(f"{name}: expected one of {options}, got {value!r}")


def check_broadcastable(name: str, x, expected_shape: Sequence[int], meaning: str = "") -> None:
    """x broadcasts to expected_shape (an additive bias over (..., T_q, T_k), for instance)."""
    got, exp = shape_of(x), tuple(expected_shape)
    if len(got) > len(exp) or any(g not in (1, e) for g, e in zip(reversed(got), reversed(exp))):
        extra = f" {meaning}" if meaning else ""
        raise InputError(f"{name}: expected a shape broadcastable to {_shape_str(exp)}{extra}, got {_shape_str(got)}")


def check_sampling(temperature, top_k, top_p) -> None:
    """The settings of numpy_impl/jax_impl/torch_ref sampling_probs (the same words in all three):
    temperature > 0 (0 is greedy decoding, which is an argmax, not a distribution), top_k a positive
    integer or None, top_p in (0, 1] or None."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
            or temperature == float("inf"):
        raise InputError(f"temperature: expected a finite number > 0 (greedy decoding takes the argmax instead), "
                         f"got {temperature!r}")
    if top_k is not None:
        check_positive_int("top_k", top_k)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise InputError(f"top_p: expected a number in (0, 1], got {top_p!r}")


def check_schedule(max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters) -> None:
    """The cosine schedule's settings, refused in the same words by the three backends' schedule.py."""
    for name, v in (("max_learning_rate", max_learning_rate), ("min_learning_rate", min_learning_rate)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise InputError(f"{name}: expected a finite number >= 0, got {v!r}")
    if isinstance(warmup_iters, bool) or not isinstance(warmup_iters, int) or warmup_iters < 0:
        raise InputError(f"warmup_iters: expected an integer >= 0, got {warmup_iters!r}")
    if (isinstance(cosine_cycle_iters, bool) or not isinstance(cosine_cycle_iters, int)
            or cosine_cycle_iters <= warmup_iters):
        raise InputError(f"cosine_cycle_iters: expected an integer > warmup_iters={warmup_iters}, "
                         f"got {cosine_cycle_iters!r}")
