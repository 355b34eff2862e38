"""Judging one case: the user's outputs against the three backends, and the name of the mistake.

Everything here runs in the checker's own process on arrays read back without pickle. A row is a
plain dict (JSON-ready): exercise, case, ok, verdict, message, diagnosis, max_abs_err, tolerance,
course_tol, shapes and L2 norms (the user's beside NumPy's, JAX's and torch's).
"""
from __future__ import annotations

import numpy as np

from common.tolerances import Tol, tolerance
from crosscheck.cases import run_on_backends
from crosscheck.spec import Case, Exercise, Variant, locate

VERDICTS = ("pass", "FAIL", "wrong shape", "wrong dtype", "wrong return type", "NaN/inf", "modified input",
            "error", "not implemented yet", "missing", "timeout", "memory", "crashed", "sys.exit")


# ---------------------------------------------------------------- comparing arrays

def compare(got: np.ndarray, ref: np.ndarray, tol: Tol) -> tuple[bool, float]:
    """(|got - ref| <= atol + rtol*|ref| everywhere, max |err|). Equal infinities (masked scores of
    -inf) and NaN where the reference has NaN count as equal; any other NaN fails."""
    if got.shape != ref.shape:
        return False, float("inf")
    if got.dtype == bool or ref.dtype == bool:
        same = got.astype(bool) == ref.astype(bool)
        return bool(same.all()), float((~same).sum())
    g, r = got.astype(np.float64), ref.astype(np.float64)
    special = (np.isnan(g) & np.isnan(r)) | (np.isinf(r) & (g == r))
    with np.errstate(invalid="ignore"):
        diff = np.where(special, 0.0, np.abs(g - r))
    if diff.size == 0:
        return True, 0.0
    diff = np.where(np.isnan(diff), np.inf, diff)
    bound = tol.atol + tol.rtol * np.where(np.isfinite(r), np.abs(r), 0.0)
    return bool(np.all(diff <= bound)), float(diff.max())


def l2(arrays) -> float | None:
    """L2 norm over the finite entries of all arrays (masked -inf scores would make it inf)."""
    total = 0.0
    for a in arrays:
        if a is None:
            return None
        a = np.asarray(a, dtype=np.float64) if a.dtype != bool else a.astype(np.float64)
        total += float(np.sum(np.where(np.isfinite(a), a, 0.0) ** 2))
    return float(np.sqrt(total))


def _as_list(result) -> list[np.ndarray]:
    from common.tolerances import to_numpy
    items = result if isinstance(result, (tuple, list)) else (result,)
    return [to_numpy(x) for x in items]


def reference_outputs(ex: Exercise, inputs: dict) -> dict[str, list[np.ndarray]]:
    """{backend: [arrays]} from every backend the exercise has, via parity's own runner."""
    return run_on_backends(ex.reference, inputs, only=ex.backends)


def expected_of(refs: dict) -> tuple[str, list[np.ndarray]]:
    """torch is the referee where it exists; NumPy otherwise (maths torch has no function for)."""
    for name in ("torch", "numpy", "jax"):
        if name in refs:
            return name, refs[name]
    raise KeyError("no reference backend")


# ---------------------------------------------------------------- diagnosis

def diagnose(ex: Exercise, inputs: dict, got: list[np.ndarray], tol: Tol) -> tuple[Variant, float] | None:
    """The first named mistake whose output the user's output matches, with the max |err| of the
    match. Variants are computed here, on the same inputs, never read from a table."""
    for variant in ex.variants:
        try:
            wrong = _as_list(variant.compute(inputs))
        except Exception:  # noqa: BLE001 - a variant undefined for this case simply does not match
            continue
        if len(wrong) != len(got) or any(g is None for g in got):
            continue
        results = [compare(g, w, tol) for g, w in zip(got, wrong)]
        if all(ok for ok, _ in results):
            return variant, max(err for _, err in results)
    return None


def generic_diagnosis(got: np.ndarray, ref: np.ndarray, tol: Tol) -> str | None:
    """Mistakes any exercise can make: the last two axes swapped, or off by one constant factor."""
    if got.ndim >= 2 and got.shape == ref.shape[:-2] + ref.shape[-2:][::-1]:
        if compare(np.swapaxes(got, -1, -2), ref, tol)[0]:
            return "your output is the expected one with its last two axes swapped (a missing or extra transpose)"
    if got.shape == ref.shape and got.size and np.all(np.isfinite(got)) and np.all(np.isfinite(ref)):
        big = np.abs(ref) > 1e-6 * (np.abs(ref).max() + 1e-300)
        if big.any():
            ratio = got[big] / ref[big]
            c = float(np.median(ratio))
            if abs(c - 1.0) > 1e-6 and c != 0 and compare(got, c * ref, tol)[0]:
                return f"your output is the expected one times {c:.6g} (a wrong constant factor or scale)"
    return None


# ---------------------------------------------------------------- one case

def _row(ex: Exercise, case: Case, **fields) -> dict:
    row = {"exercise": ex.name, "group": ex.group, "case": case.name, "dtype": case.dtype, "ok": False,
           "verdict": "FAIL", "message": "", "diagnosis": None, "explanation": None, "fix_at": None,
           "max_abs_err": None, "tolerance": None, "course_tol": case.course_tol,
           "shape": None, "expected_shape": None, "l2": None, "l2_ref": {}, "traceback": []}
    row.update(fields)
    return row


def _error_row(ex: Exercise, case: Case, reply: dict, path_hint: str) -> dict:
    """A reply that carries no outputs: what the user's code did instead."""
    if (reply.get("error") or {}).get("not_graded"):  # the case needs an argument the function cannot take
        return _row(ex, case, ok=True, verdict="not graded", message=f"not graded: {reply['error']['not_graded']}")
    if "timeout" in reply:
        return _row(ex, case, verdict="timeout",
                    message=f"no answer within {reply['timeout']:g} s (an endless loop?); --timeout raises the limit")
    if "memory" in reply:
        gib = reply["memory"] / 1024**3
        return _row(ex, case, verdict="memory", message=f"used more than the {gib:g} GiB memory limit (--memory-limit)")
    if "died" in reply:
        how = reply.get("how", "")
        text = {"SIGSEGV": "a segmentation fault", "SIGABRT": "an abort", "SIGKILL": "SIGKILL (out of memory?)"}
        return _row(ex, case, verdict="crashed",
                    message=f"the process running your code died: {text.get(how, how)}")
    if "garbled" in reply:
        return _row(ex, case, verdict="crashed", message="your code wrote over the checker's private channel")
    err = reply.get("error") or reply.get("load_error", {}).get("error") or {}
    frames = err.get("frames") or []
    where = f" at {frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]}" if frames else ""
    if err.get("missing"):
        return _row(ex, case, verdict="missing",
                    message=f"{path_hint} defines no `{err['missing']}`; expected {ex.signature} "
                            f"(`triptych exercise new {ex.group}` writes a skeleton)")
    if err.get("not_implemented"):
        return _row(ex, case, verdict="not implemented yet", message=f"{ex.defines} still raises NotImplementedError")
    if err.get("exit_code") is not None:
        return _row(ex, case, verdict="sys.exit", traceback=frames,
                    message=f"your code called sys.exit({err['exit_code']}){where}; return a value instead")
    if err.get("memory"):
        return _row(ex, case, verdict="memory", traceback=frames,
                    message=f"ran out of memory{where} (limit: --memory-limit)")
    return _row(ex, case, verdict="error", traceback=frames,
                message=f"{err.get('type', 'error')}: {err.get('message', '')}{where}".strip())


def judge(ex: Exercise, case: Case, inputs: dict, refs: dict, reply: dict, path_hint: str = "your file") -> dict:
    """The verdict for one case, from the child's reply and the references."""
    ref_name, expected = expected_of(refs)
    tol = tolerance(case.dtype, ex.tol_kind)
    base = dict(expected_shape=" ".join(str(tuple(e.shape)) for e in expected),
                l2_ref={b: l2(v) for b, v in refs.items()},
                tolerance=tol.atol + tol.rtol * max((float(np.max(np.abs(np.where(np.isfinite(e), e, 0))))
                                                    if e.size and e.dtype != bool else 0.0) for e in expected))
    if not reply.get("ok"):
        row = _error_row(ex, case, reply, path_hint)
        row.update({k: v for k, v in base.items() if k != "tolerance"})
        return row
    got: list = reply["outputs"]
    n_want = len(ex.outputs)
    if len(got) != n_want or (n_want > 1 and not reply.get("tuple")):
        want = "one array" if n_want == 1 else f"a tuple of {n_want} arrays ({', '.join(ex.outputs)})"
        return _row(ex, case, verdict="wrong return type", **base,
                    message=f"expected {want}, got {len(got)} item(s): {', '.join(reply.get('types', []))}")
    bad_types = [t for g, t in zip(got, reply.get("types", [])) if g is None]
    if bad_types and ex.target.get("kind") in ("value", "answer") and set(bad_types) == {"builtins.NoneType"}:
        # The skeleton's `NAME = None  # TODO`: an answer not written yet, not a wrong one.
        return _row(ex, case, verdict="not implemented yet", **base, message=f"{ex.defines} is still None")
    if bad_types:
        return _row(ex, case, verdict="wrong return type", **base,
                    message=f"expected arrays, got {', '.join(bad_types)}")
    base.update(shape=" ".join(str(tuple(g.shape)) for g in got), l2=l2(got))

    if ex.grade is not None:
        custom = ex.grade(case, inputs, got, refs)
        if custom is not None:
            return _row(ex, case, **{**base, **custom})

    changed = [k for k, after in reply.get("inputs_after", {}).items() if _changed(inputs, k, after)]
    if changed:
        return _row(ex, case, verdict="modified input", **base,
                    message=f"your code changed its input `{changed[0]}` in place; work on a copy")

    results = [compare(g, e, tol) for g, e in zip(got, expected)]
    max_err = max(err for _, err in results)
    base["max_abs_err"] = max_err
    if all(ok for ok, _ in results) and all(g.dtype == e.dtype for g, e in zip(got, expected)):
        return _row(ex, case, ok=True, verdict="pass", **base)

    shapes_ok = all(g.shape == e.shape for g, e in zip(got, expected))
    found = diagnose(ex, inputs, got, tol)
    diag = {}
    if found:
        variant, err = found
        diag = dict(diagnosis=f"your output matches {variant.says}, max |err| {err:.1e}",
                    explanation=variant.why, fix_at=locate(variant.fix_at), mistake=variant.name)
    elif shapes_ok:
        generic = next((d for d in (generic_diagnosis(g, e, tol) for g, e in zip(got, expected)) if d), None)
        if generic:
            diag = dict(diagnosis=generic)
    if not shapes_ok:
        return _row(ex, case, verdict="wrong shape", **base, **diag,
                    message=f"got shape {base['shape']}, expected {base['expected_shape']}")
    if all(ok for ok, _ in results):  # right values, wrong dtype
        dts = ", ".join(f"{g.dtype} (expected {e.dtype})" for g, e in zip(got, expected) if g.dtype != e.dtype)
        return _row(ex, case, verdict="wrong dtype", **base, **diag,
                    message=f"right values but dtype {dts}: keep the input's precision")
    if any(not np.all(np.isfinite(g)) for g in got if g.dtype != bool) and not diag:
        where = next(i for i, g in enumerate(got) if g.dtype != bool and not np.all(np.isfinite(g)))
        if np.isnan(got[where]).any() and not np.isnan(expected[where]).any():
            return _row(ex, case, verdict="NaN/inf", **base,
                        message=f"{ex.outputs[where]} holds NaN where the reference ({ref_name}) is finite")
    within_course = case.course_tol is not None and max_err <= case.course_tol
    note = f" (within the course's {case.course_tol:g}, not within ours)" if within_course else ""
    return _row(ex, case, verdict="FAIL", **base, **diag,
                message=f"max |err| {max_err:.2e} vs {ref_name}, tolerance {base['tolerance']:.1e}{note}")


def _changed(inputs: dict, key: str, after: np.ndarray) -> bool:
    before = inputs
    for part in key.split("/"):
        before = before.get(part) if isinstance(before, dict) else None
    if not isinstance(before, np.ndarray) or before.shape != after.shape:
        return False
    return not np.array_equal(before, after, equal_nan=before.dtype.kind == "f")
