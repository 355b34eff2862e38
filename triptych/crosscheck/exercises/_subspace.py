"""Course E.1's subspace reader for triptych/crosscheck/exercises/course_ce.py: its inputs (random orthonormal
bases), its wrong variants and its grader. Graded by what M does, not by what it is: any M with
M (v_a + v_b)/2 = v_a on the case's random pairs passes, 2 A A^T or not."""
from __future__ import annotations

import numpy as np

from triptych.common.course import orthonormal_columns as orthonormal, subspace_setup
from triptych.common.tolerances import compare, tolerance
from triptych.crosscheck.spec import Variant, locate


def subspaces(d, m, p, lesson=False):
    def make(rng, dt):
        if lesson:
            s = subspace_setup()
            a, b = s["A"], s["B"]
        else:
            basis = orthonormal(rng, d, m + p)
            a, b = basis[:, :m], basis[:, m:]
        n = 5  # random v_a, v_b pairs the reader is tried on
        return {"A": a.astype(dt), "B": b.astype(dt), "ca": rng.standard_normal((a.shape[1], n)).astype(dt),
                "cb": rng.standard_normal((b.shape[1], n)).astype(dt)}
    return make


def _reader_action(i, m):
    """(M (v_a + v_b)/2, v_a) for the case's random pairs: what any right M must map."""
    va, vb = i["A"] @ i["ca"], i["B"] @ i["cb"]
    return m @ ((va + vb) / 2), va


_SUB = ("triptych.lessons.subspace", "compute", "M = 2.0 * P")
READER_VARIANTS = (
    Variant("reader_no_factor_2", "a projector onto span(a) without the factor 2 (it returns v_a / 2)",
            "the average holds v_a / 2: projecting keeps the half, so M = 2 A A^T (2 on span(a), 0 on span(b))",
            lambda i: i["A"] @ i["A"].T, _SUB),
    Variant("reader_wrong_subspace", "2 B B^T: the reader of v_b, not of v_a",
            "M must keep span(a) = the columns of A and remove span(b)", lambda i: 2 * i["B"] @ i["B"].T, _SUB),
    Variant("reader_keeps_b", "2 I: the average doubled, v_b kept",
            "M must send span(b) to 0 (A^T B = 0 makes 2 A A^T do that)", lambda i: 2 * np.eye(len(i["A"])), _SUB),
)


def grade_reader(case, inputs, got, refs):
    m = np.asarray(got[0], dtype=np.float64)
    d = inputs["A"].shape[0]
    if m.shape != (d, d):
        return None  # the default comparison reports the shape
    tol = tolerance(case.dtype, "value")
    mine, want = _reader_action(inputs, m)
    ok, err = compare(mine, want, tol)
    fields = dict(max_abs_err=err, tolerance=tol.atol + tol.rtol * float(np.abs(want).max()))
    if ok:
        two_aat = np.allclose(m, 2 * inputs["A"] @ inputs["A"].T, atol=1e-8)
        return dict(ok=True, verdict="pass", **fields, message="M (v_a + v_b)/2 = v_a" + (
            " (your M is 2 A A^T)" if two_aat else " (your M differs from 2 A A^T off span(a) + span(b): also right)"))
    for v in READER_VARIANTS:
        wrong, _ = _reader_action(inputs, np.asarray(v.compute(inputs), dtype=np.float64))
        same, dist = compare(mine, wrong, tol)
        if same:
            return dict(verdict="FAIL", **fields, message=f"max |M (v_a + v_b)/2 - v_a| {err:.2e}",
                        diagnosis=f"your M acts as {v.says}, max |err| {dist:.1e}", explanation=v.why,
                        fix_at=locate(v.fix_at), mistake=v.name)
    return dict(verdict="FAIL", **fields, message=f"max |M (v_a + v_b)/2 - v_a| {err:.2e}, tolerance {fields['tolerance']:.1e}")
