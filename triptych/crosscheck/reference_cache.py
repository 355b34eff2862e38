"""The three backends' outputs on a case, computed once per process and shared.

A case's inputs follow from its seed and dtype alone (Case.inputs), so the references of
(exercise, case, dtype) are the same for every submission: a class of forty students costs one
run of NumPy, JAX and torch per case, not forty. Grading threads (`check DIR -j N`) ask at the
same time; one lock makes the first ask compute and the others wait for it. The arrays are made
read-only so that code changing a reference in place fails loudly instead of grading the next
student against a changed answer.
"""
from __future__ import annotations

import threading

import numpy as np

from triptych.crosscheck.grade import reference_outputs
from triptych.crosscheck.spec import Exercise

# (exercise, case, dtype, seed) -> (the reference function, the inputs function, {backend: [arrays]}):
# an exercise defined again under the same name (a test's, a reloaded pack's) has other functions
# and is computed afresh.
_CACHE: dict[tuple, tuple] = {}
# One lock for the whole computation, not one per key: torch and JAX are run from one thread at a
# time as in a plain check, and after the first submission every ask is a dictionary read.
_LOCK = threading.Lock()


def _frozen(value):
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _frozen(v)
    return value


def references(ex: Exercise, case, inputs: dict) -> dict[str, list]:
    """{backend: [arrays]} for this case of this exercise (grade.reference_outputs, cached by
    exercise, case, dtype and seed; `inputs` must be case.inputs at the case's seed and dtype)."""
    key = (ex.name, case.name, str(case.dtype), case.seed)
    with _LOCK:
        known = _CACHE.get(key)
        if known is None or known[0] is not ex.reference or known[1] is not case.inputs:
            refs = reference_outputs(ex, inputs)
            for outputs in refs.values():
                _frozen(outputs)
            known = _CACHE[key] = (ex.reference, case.inputs, refs)
        return known[2]


def clear() -> None:
    """Forget every cached reference (an exercise pack reloaded under the same names)."""
    with _LOCK:
        _CACHE.clear()
