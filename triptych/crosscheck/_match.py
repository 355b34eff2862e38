"""Matching a user's outputs to the answers an exercise knows besides the right one: conventions
(different but legitimate), lower precision (the right maths with float32 somewhere) and named
mistakes. crosscheck.grade decides the verdict; this module only says what matches.

Real code differs from the wrong answers we compute in two ways that must not hide a match:
- a fully masked query row is NaN in real code (softmax of all -inf) where our variant, computed
  with a guarded softmax, has zeros: `loose` comparison accepts such rows when the rest matches;
- scores (before the softmax) filled with -1e9 or finfo.min instead of -inf: compared after a
  softmax over the last axis too, the unmasked scores still compared as they are.
"""
from __future__ import annotations

import numpy as np

from triptych.common.tolerances import Tol, compare, tolerance, to_numpy  # compare: the project's one rule
from triptych.crosscheck.spec import Exercise, Forms, Variant

# Scores at or beyond this size are mask fills (-1e9, -1e30, finfo.min), not computed values: the
# scores of random O(1) data stay below 1e3 even unscaled.
FILL_SIZE = 1e4


def softmax_last(a: np.ndarray) -> np.ndarray:
    """Softmax over the last axis in float64; a row of all -inf gives zeros (on both sides alike)."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        top = np.max(a, axis=-1, keepdims=True)
        e = np.exp(a - np.where(np.isfinite(top), top, 0.0))
        s = e.sum(axis=-1, keepdims=True)
        return e / np.where(s == 0, 1.0, s)


def compare_loose(got: np.ndarray, want: np.ndarray, tol: Tol) -> tuple[bool, float]:
    """compare() for naming a variant: rows (last axis) that one side leaves undefined are skipped.
    A row is undefined when it is all NaN/inf on one side and all zeros or all NaN/inf on the other
    (a fully masked query: real code gives NaN, our variant zeros), or all zeros in the variant
    against a finite row (a finite fill made that query attend uniformly). At most half the rows
    may be skipped, so the rest decides."""
    if got.shape != want.shape or got.dtype == bool or want.dtype == bool or got.size == 0:
        return compare(got, want, tol)
    ok, err = compare(got, want, tol)
    if ok:
        return ok, err
    g = got.astype(np.float64).reshape(-1, got.shape[-1] if got.ndim else 1)
    w = want.astype(np.float64).reshape(g.shape)
    g_bad = ~np.isfinite(g).all(-1)
    g_all_bad, w_all_bad = ~np.isfinite(g).any(-1), ~np.isfinite(w).any(-1)
    g_zero, w_zero = (g == 0).all(-1), (w == 0).all(-1)
    undefined = ((g_all_bad & (w_zero | w_all_bad)) | (w_all_bad & (g_zero | g_all_bad))
                 | (w_zero & ~g_bad & (g.shape[-1] > 1)))
    rows_ok = np.array([compare(g[i], w[i], tol)[0] for i in range(len(g))])
    skipped = undefined & ~rows_ok
    keep = ~skipped
    if skipped.sum() > len(g) / 2 or not keep.any():
        return False, err
    return compare(g[keep], w[keep], tol)


def _scores_match(got: np.ndarray, want: np.ndarray, tol: Tol, loose: bool) -> tuple[bool, float]:
    """Scores: the same softmax over the last axis, and the same values wherever both are ordinary
    (finite and below FILL_SIZE), so a fill of -1e9 meets one of -inf but a shifted row does not."""
    cmp = compare_loose if loose else compare
    ok, err = cmp(softmax_last(got), softmax_last(want), tol)
    if not ok:
        return False, err
    g, w = got.astype(np.float64), want.astype(np.float64)
    plain = np.isfinite(g) & np.isfinite(w) & (np.abs(g) < FILL_SIZE) & (np.abs(w) < FILL_SIZE)
    return compare(np.where(plain, g, 0.0), np.where(plain, w, 0.0), tol)


def match_outputs(ex: Exercise, got: list[np.ndarray], want: list[np.ndarray], tol: Tol,
                  loose: bool = False) -> tuple[bool, float]:
    """Every output of the user's matches `want` (the first len(got) of it: optional outputs left
    out are not compared). Scores are matched directly or through their softmax."""
    if len(want) < len(got) or any(g is None for g in got):
        return False, float("inf")
    errs, ok = [], True
    for name, g, w in zip(ex.outputs, got, want):
        w = np.asarray(w)
        if g.shape != w.shape:
            return False, float("inf")
        r_ok, r_err = (compare_loose if loose else compare)(g, w, tol)
        if not r_ok and name in ex.scores and g.dtype != bool:
            r_ok, r_err = _scores_match(g, w, tol, loose)
        ok &= r_ok
        errs.append(r_err)
    return ok, max(errs, default=0.0)


def _as_list(result) -> list[np.ndarray]:
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [to_numpy(x) for x in items]


def find_variant(ex: Exercise, inputs: dict, got: list[np.ndarray], tol: Tol, kind: str,
                 loose: bool = False, expected: list[np.ndarray] | None = None) -> tuple[Variant, float] | None:
    """The first variant of `kind` whose output the user's matches, with the max |err| of the match.
    Variants are computed here, on the same inputs, never read from a table. loose: an exact match
    to any variant first, then the NaN-aware one (compare_loose). A variant that gives the expected
    output on this case (a scale= mistake where no scale is passed) tells nothing and is skipped."""
    computed = []
    for variant in ex.variants:
        if variant.kind != kind:
            continue
        try:
            result = variant.compute(inputs)
            forms = [_as_list(r) for r in (result if isinstance(result, Forms) else (result,))]
        except Exception:  # noqa: BLE001 - a variant undefined for this case simply does not match
            continue
        for wrong in forms:
            if len(wrong) < len(got):  # the user may leave optional outputs out, never a variant
                continue
            if expected is not None and match_outputs(ex, wrong[:len(expected)], expected, tol)[0]:
                continue
            computed.append((variant, wrong))
    for how in (False, True) if loose else (False,):
        for variant, wrong in computed:
            with np.errstate(invalid="ignore", over="ignore"):
                ok, err = match_outputs(ex, got, wrong, tol, how)
            if ok:
                return variant, err
    return None


# ---------------------------------------------------------------- precision

def _cast32(x):
    if isinstance(x, dict):
        return {k: _cast32(v) for k, v in x.items()}
    if isinstance(x, np.ndarray) and x.dtype == np.float64:
        return x.astype(np.float32)
    return x


def float32_reference(ex: Exercise, inputs: dict, backend: str) -> list[np.ndarray] | None:
    """The referee's outputs on the inputs cast to float32 (what float64 code computes when float32
    enters at the start), or None when the reference does not run that way."""
    from triptych.crosscheck.cases import run_on_backends
    try:
        return run_on_backends(ex.reference, _cast32(inputs), only=(backend,))[backend]
    except Exception:  # noqa: BLE001 - a reference that needs float64 has no float32 twin
        return None


def float32_tol(ex: Exercise) -> Tol | None:
    try:
        return tolerance("float32", ex.tol_kind)
    except KeyError:
        return None


def numpy_promotion_note(case_dtype: str, got: list[np.ndarray], expected: list[np.ndarray],
                         types: list[str]) -> str | None:
    """float32 in, float64 out, from NumPy code: NumPy 2's promotion (NEP 50), not a choice."""
    promoted = [g.dtype == np.float64 and e.dtype == np.float32 for g, e in zip(got, expected)]
    other_ok = all(p or g.dtype == e.dtype for p, g, e in zip(promoted, got, expected))
    numpy_code = all(t.startswith("numpy.") for t in types)
    if case_dtype != "float32" or not any(promoted) or not other_ok or not numpy_code:
        return None
    return ("float32 in, float64 out with the right values: NumPy 2 promotes a float32 array combined with a "
            "float64 NumPy scalar (np.sqrt(n_embd / n_heads) is one: np.sqrt of a Python float returns "
            "np.float64) to float64; use math.sqrt, a Python float, or `.astype(A.dtype)` to keep float32")
