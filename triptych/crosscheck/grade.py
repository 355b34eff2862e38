"""Judging one case: the user's outputs against the three backends, and the name of the mistake.

Everything here runs in the checker's own process on arrays read back without pickle. A row is a
plain dict (JSON-ready): exercise, case, ok, verdict, message, diagnosis, max_abs_err, tolerance,
course_tol, shapes and L2 norms (the user's beside NumPy's, JAX's and torch's).
"""
from __future__ import annotations

import numpy as np

from triptych.common.invocation import command
from triptych.common.tolerances import Tol, compare, tolerance
from triptych.crosscheck._match import find_variant, float32_reference, float32_tol, match_outputs, numpy_promotion_note
from triptych.crosscheck.cases import run_on_backends
from triptych.crosscheck.spec import Case, Exercise, Variant, locate

VERDICTS = ("pass", "not graded", "FAIL", "wrong shape", "wrong dtype", "wrong return type", "NaN/inf", "modified input",
            "error", "not implemented yet", "missing", "timeout", "memory", "crashed", "sys.exit")


# ---------------------------------------------------------------- comparing arrays

# compare() lives in crosscheck._match beside the looser comparisons that name variants; it is
# imported here because callers know it as crosscheck.grade.compare.


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
    from triptych.common.tolerances import to_numpy
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

def diagnose(ex: Exercise, inputs: dict, got: list[np.ndarray], tol: Tol,
             expected: list[np.ndarray] | None = None) -> tuple[Variant, float] | None:
    """The first named mistake whose output the user's output matches (NaN-aware, scores through
    their softmax too), with the max |err| of the match; with `expected`, mistakes that give the
    right output on this case are passed over."""
    return find_variant(ex, inputs, got, tol, "mistake", loose=True, expected=expected)


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
           "max_abs_err": None, "tolerance": None, "course_tol": case.course_tol, "note": None,
           "convention": None, "precision": None,
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
                            f"(`{command('exercise', 'new', ex.group)}` writes a skeleton)")
    if err.get("not_implemented"):
        return _row(ex, case, verdict="not implemented yet", message=f"{ex.defines} still raises NotImplementedError")
    if err.get("exit_code") is not None:
        return _row(ex, case, verdict="sys.exit", traceback=frames,
                    message=f"your code called sys.exit({err['exit_code']}){where}; return a value instead")
    if err.get("memory"):
        return _row(ex, case, verdict="memory", traceback=frames,
                    message=f"ran out of memory{where} (limit: --memory-limit)")
    hint = ""
    if err.get("absent_module") and "is not available" not in err.get("message", ""):
        # A package the user's environment has and this Python lacks (their project's extras).
        hint = (f" (`{err['absent_module']}` is not installed for this Python: --python PATH runs your code "
                "under your own environment)")
    if err.get("type") == "SyntaxError" and err.get("python"):
        # Code that runs for its author may use newer syntax (`class Heap[T]:` is Python 3.12).
        hint = (f" (if it runs under your own Python, it uses syntax newer than the Python {err['python']} "
                "running it here: --python PATH runs your own)")
    return _row(ex, case, verdict="error", traceback=frames,
                message=f"{err.get('type', 'error')}: {err.get('message', '')}{where}{hint}".strip())


def judge(ex: Exercise, case: Case, inputs: dict, refs: dict, reply: dict, path_hint: str = "your file") -> dict:
    """The verdict for one case, from the child's reply and the references."""
    ref_name, expected = expected_of(refs)
    tol = tolerance(case.dtype, ex.tol_kind)
    if not reply.get("ok"):
        row = _error_row(ex, case, reply, path_hint)
        row.update(_base(expected, refs, tol), tolerance=None)
        return row
    received = _received(ex, case, reply, expected, refs, tol)
    if isinstance(received, dict):  # the row for a reply that is not the arrays the exercise returns
        return received
    got, expected, base, said = received
    if ex.grade is not None:
        custom = ex.grade(case, inputs, got, refs)
        if custom is not None:
            return _row(ex, case, **{**base, **custom})
    changed = [k for k, after in reply.get("inputs_after", {}).items() if _changed(inputs, k, after)]
    if changed:
        return _row(ex, case, verdict="modified input", **base,
                    message=f"your code changed its input `{changed[0]}` in place; work on a copy")
    results = [compare(g, e, tol) for g, e in zip(got, expected)]
    base["max_abs_err"] = max(err for _, err in results)
    promotion = numpy_promotion_note(case.dtype, got, expected, reply.get("types", []))
    dtypes_ok = all(g.dtype == e.dtype for g, e in zip(got, expected)) or promotion is not None
    if all(ok for ok, _ in results) and dtypes_ok:
        if promotion:
            return _passed(ex, case, {**base, "message": said}, promotion, precision="numpy2_promotion")
        return _row(ex, case, ok=True, verdict="pass", **base, message=said)
    oks = (all(ok for ok, _ in results), dtypes_ok)
    return _not_passed(ex, case, inputs, got, expected, oks, tol, ref_name, base, said)


def _received(ex: Exercise, case: Case, reply: dict, expected: list, refs: dict, tol: Tol):
    """(outputs, the expected ones cut to them, the row's base fields, the note on optional outputs
    left out), or the row for a reply that is not the arrays the exercise returns."""
    got: list = reply["outputs"]
    n_want, n_least = len(ex.outputs), len(ex.outputs) - len(ex.optional_outputs)
    if not n_least <= len(got) <= n_want or (len(got) > 1 and not reply.get("tuple")):
        return _row(ex, case, verdict="wrong return type", **_base(expected, refs, tol),
                    message=f"expected {_wanted(ex)}, got {len(got)} item(s): {', '.join(reply.get('types', []))}")
    expected = expected[:len(got)]  # optional outputs the user left out are not graded
    base = _base(expected, refs, tol)
    bad_types = [t for g, t in zip(got, reply.get("types", [])) if g is None]
    if bad_types and ex.target.get("kind") in ("value", "answer") and set(bad_types) == {"builtins.NoneType"}:
        # The skeleton's `NAME = None  # TODO`: an answer not written yet, not a wrong one.
        return _row(ex, case, verdict="not implemented yet", **base, message=f"{ex.defines} is still None")
    if bad_types:
        return _row(ex, case, verdict="wrong return type", **base,
                    message=f"expected arrays, got {', '.join(bad_types)}")
    base.update(shape=" ".join(str(tuple(g.shape)) for g in got), l2=l2(got))
    left_out = ex.outputs[len(got):]
    # Said on a passing row: the outputs left out were optional, so the pass covers the others only.
    said = (f"{', '.join(left_out)} not returned (optional here): graded on {', '.join(ex.outputs[:len(got)])}"
            if left_out else "")
    return got, expected, base, said


def _not_passed(ex, case, inputs, got, expected, oks, tol, ref_name, base, said) -> dict:
    """Outputs unlike the reference (oks: values, dtypes right): a legitimate answer's pass, or the verdict."""
    values_ok, dtypes_ok = oks
    shapes_ok = all(g.shape == e.shape for g, e in zip(got, expected))
    if shapes_ok and dtypes_ok:
        legit = _legitimate(ex, case, inputs, got, expected, tol, ref_name, {**base, "message": said})
        if legit is not None:
            return legit
    lowered = _float32_answer(ex, case, inputs, got, ref_name) if shapes_ok else None
    if lowered:
        return _passed(ex, case, {**base, "message": said}, lowered, precision="float32_output")
    diag = _diagnosis(ex, case, inputs, got, expected, tol, shapes_ok)
    if not shapes_ok:
        return _row(ex, case, verdict="wrong shape", **base, **diag,
                    message=f"got shape {base['shape']}, expected {base['expected_shape']}")
    if values_ok:  # right values, wrong dtype
        dts = ", ".join(f"{g.dtype} (expected {e.dtype})" for g, e in zip(got, expected) if g.dtype != e.dtype)
        return _row(ex, case, verdict="wrong dtype", **base, **diag,
                    message=f"right values but dtype {dts}: keep the input's precision")
    if any(not np.all(np.isfinite(g)) for g in got if g.dtype != bool) and not diag:
        where = next(i for i, g in enumerate(got) if g.dtype != bool and not np.all(np.isfinite(g)))
        if np.isnan(got[where]).any() and not np.isnan(expected[where]).any():
            return _row(ex, case, verdict="NaN/inf", **base,
                        message=f"{ex.outputs[where]} holds NaN where the reference ({ref_name}) is finite")
    return _row(ex, case, verdict="FAIL", **base, **diag,
                message=f"max |err| {base['max_abs_err']:.2e} vs {ref_name}, tolerance {base['tolerance']:.1e}")


def _diagnosis(ex, case, inputs, got, expected, tol, shapes_ok) -> dict:
    """The named mistake the output matches, else (same shapes) what the difference looks like."""
    found, where = diagnose(ex, inputs, got, tol, expected), ""
    if not found and case.dtype == "float64" and float32_tol(ex) is not None:
        # The mistake made with float32 somewhere (a float32 table AND the wrong pairing) is still it;
        # mistakes within float32 of the right answer (eps placement) are passed over there.
        found, where = diagnose(ex, inputs, got, float32_tol(ex), expected), " (to float32 precision)"
    if found:
        variant, err = found
        return dict(diagnosis=f"your output matches {variant.says}, max |err| {err:.1e}{where}",
                    explanation=variant.why, fix_at=locate(variant.fix_at), mistake=variant.name)
    generic = shapes_ok and next((d for d in (generic_diagnosis(g, e, tol) for g, e in zip(got, expected)) if d), None)
    return dict(diagnosis=generic) if generic else {}


def _wanted(ex: Exercise) -> str:
    if len(ex.outputs) == 1:
        return "one array"
    full = f"a tuple of {len(ex.outputs)} arrays ({', '.join(ex.outputs)})"
    if not ex.optional_outputs:
        return full
    least = ex.outputs[:len(ex.outputs) - len(ex.optional_outputs)]
    return f"{full} or {', '.join(least)} alone"


def _base(expected: list, refs: dict, tol: Tol) -> dict:
    return dict(expected_shape=" ".join(str(tuple(e.shape)) for e in expected),
                l2_ref={b: l2(v[:len(expected)]) for b, v in refs.items()},
                tolerance=tol.atol + tol.rtol * max((float(np.max(np.abs(np.where(np.isfinite(e), e, 0))))
                                                    if e.size and e.dtype != bool else 0.0) for e in expected))


def _passed(ex: Exercise, case: Case, base: dict, note: str, **named) -> dict:
    """A pass with a note: a convention, a precision or the course's tolerance. The note says what
    matched; the row's max |err| stays the distance to our reference."""
    return _row(ex, case, ok=True, verdict="pass", **base, note=note, **named)


def _legitimate(ex, case, inputs, got, expected, tol, ref_name, base) -> dict | None:
    """A pass with a note when the output is not ours but a legitimate answer: a convention (within
    the case's tolerance), a named lower-precision form (within float32's), the course's own pass
    mark, or the reference recomputed on float32 inputs. The course's mark comes before the last,
    which is the vaguest: it says only that the error is of float32's size."""
    found = find_variant(ex, inputs, got, tol, "convention")
    if found:
        variant, err = found
        if not np.isfinite(base["max_abs_err"]):  # -1e9 against -inf: the form's distance says more
            base = {**base, "max_abs_err": err}
        return _passed(ex, case, base, f"{variant.says}: {variant.why} (max |err| {err:.1e} from that form)",
                       convention=variant.name)
    tol32 = float32_tol(ex)
    found = find_variant(ex, inputs, got, tol32, "precision") if tol32 else None
    if found:
        variant, err = found
        return _passed(ex, case, base, f"{variant.says}: {variant.why} (max |err| {err:.1e} from that "
                                       f"computation, {base['max_abs_err']:.1e} from the float64 reference)",
                       precision=variant.name)
    if case.course_tol is not None and base["max_abs_err"] <= case.course_tol:
        return _passed(ex, case, base, f"within the course's own tolerance {case.course_tol:g} (max |err| "
                                       f"{base['max_abs_err']:.1e}); ours is tighter: {base['tolerance']:.1e}")
    if tol32 and case.dtype == "float64" and not diagnose(ex, inputs, got, tol, expected):
        ref32 = float32_reference(ex, inputs, ref_name)
        if ref32 is not None and match_outputs(ex, got, ref32, tol32)[0]:
            return _passed(ex, case, base, (
                f"matches the reference computed in float32 (max |err| {base['max_abs_err']:.1e} from the "
                f"float64 one, tolerance {base['tolerance']:.1e}): float32 entered somewhere (a table, a "
                f"constant, a torch scalar); float64 input deserves float64 arithmetic"),
                precision="float32_arithmetic")
    return None


def _float32_answer(ex, case, inputs, got, ref_name) -> str | None:
    """The note for float64 input answered in float32 with the values of the reference computed in
    float32: the maths is right and the precision was lost on the way (None otherwise)."""
    if case.dtype != "float64" or not all(g.dtype in (np.float32, np.float64) for g in got) \
            or not any(g.dtype == np.float32 for g in got):
        return None
    tol32 = float32_tol(ex)
    ref32 = float32_reference(ex, inputs, ref_name) if tol32 else None
    if ref32 is None or not match_outputs(ex, got, ref32, tol32)[0]:
        return None
    return ("float64 input answered in float32 (matches the reference computed in float32): the precision was "
            "dropped on the way (a .float(), astype(np.float32), a buffer made with torch's default dtype); float64 "
            "input deserves float64 arithmetic, and the result its dtype")


def _changed(inputs: dict, key: str, after: np.ndarray) -> bool:
    before = inputs
    for part in key.split("/"):
        before = before.get(part) if isinstance(before, dict) else None
    if not isinstance(before, np.ndarray) or before.shape != after.shape:
        return False
    return not np.array_equal(before, after, equal_nan=before.dtype.kind == "f")


# ---------------------------------------------------------------- across exercises

# A part in one of these states is broken in a way worth fixing first; "missing" and "not
# implemented yet" parts are simply not there yet.
_BROKEN = {"FAIL", "wrong shape", "wrong dtype", "wrong return type", "NaN/inf", "modified input", "error",
           "timeout", "memory", "crashed", "sys.exit"}


# Libraries whose functions cannot be a user's own part: a call into anything else imported (the
# user's package, `from .model import TransformerLM`) may reach the part, so it is not ruled out.
_LIBRARIES = {"numpy", "torch", "jax", "jaxlib", "math", "einops", "einx", "jaxtyping", "typing", "collections",
              "functools", "itertools", "dataclasses", "os", "sys", "re", "__future__", "scipy", "regex"}


def _mentions(source: str | None) -> dict[str, set[str]] | None:
    """{top-level function or class: every name it mentions}, and under "<own imports>" the names the
    file imports from outside the known libraries; None without a readable source."""
    import ast
    try:
        tree = ast.parse(source) if source else None
    except SyntaxError:
        tree = None
    if tree is None:
        return None
    found: dict[str, set[str]] = {"<own imports>": set()}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                                if isinstance(n, (ast.Name, ast.Attribute))} - {node.name}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] not in _LIBRARIES):
            found["<own imports>"].update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found["<own imports>"].update((a.asname or a.name).split(".")[0] for a in node.names
                                          if a.name.split(".")[0] not in _LIBRARIES)
    return found


def _uses(mentions: dict[str, set[str]] | None, user: str, part: str) -> bool:
    """Whether `user` reaches `part` through the file's own functions, or may through the user's own
    imported code (True when unknown)."""
    if mentions is None:
        return True
    seen, todo = set(), [user]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        called = mentions.get(name, set())
        if part in called or called & mentions["<own imports>"]:
            return True
        todo.extend(n for n in called if n in mentions)
    return False


def order_failures(rows: list[dict], source: str | None = None) -> list[dict]:
    """When an end-to-end exercise fails and a part it is built from (Exercise.parts) fails in the
    same file, say on the end-to-end rows which part to fix first. With the file's source, a part is
    named only when the function reaches it through the file's code or may through code the file
    imports from the user's own package. Changes the rows in place; returns them."""
    from triptych.crosscheck import exercises as catalogue
    broken = {r.get("exercise") for r in rows if not r.get("ok") and r.get("verdict") in _BROKEN}
    mentions = _mentions(source)
    for r in rows:
        if r.get("ok") or not r.get("exercise") or r.get("fix_first"):
            continue
        try:
            ex = catalogue.get(f"{r['group']}.{r['exercise']}" if r.get("group") else r["exercise"])
            parts = [(p, catalogue.get(p).defines) for p in ex.parts if p in broken and p != ex.name]
        except Exception:  # noqa: BLE001 - a row of an exercise not in the catalogue: nothing to order
            continue
        first = [p for p, defines in parts if _uses(mentions, ex.defines, defines)]
        if not first:
            continue
        names = ", ".join(f"`{p}`" for p in first)
        they = ("it fails", "uses it") if len(first) == 1 else ("they fail", "uses them")
        text = f"fix {names} first: {they[0]} too, and {ex.defines} {they[1]}"
        r["fix_first"] = first
        r["message"] = f"{r['message']}; {text}" if r.get("message") else text
    return rows
