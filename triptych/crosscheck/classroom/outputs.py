"""Where `check --format gradescope|junit` puts its document, and the document itself."""
from __future__ import annotations

import json
import os

from triptych.common.io import atomic_write_text
from triptych.crosscheck.classroom.gradescope import GRADESCOPE_RESULTS, gradescope_results
from triptych.crosscheck.classroom.junit import junit_xml
from triptych.crosscheck.classroom.points import Points

FORMATS = ("gradescope", "junit")


def destination(fmt: str, out: str | None) -> str | None:
    """--out; for gradescope inside Gradescope's container (a /autograder folder), the file its
    harness uploads; otherwise None: standard output."""
    if out:
        return out
    if fmt == "gradescope" and os.path.isdir(os.path.dirname(os.path.dirname(GRADESCOPE_RESULTS))):
        return GRADESCOPE_RESULTS
    return None


def document(fmt: str, reports: list, points: Points | None = None, execution_time: float | None = None) -> str:
    if fmt == "gradescope":
        return json.dumps(gradescope_results(reports, points, execution_time), indent=2) + "\n"
    if fmt == "junit":
        return junit_xml(reports)
    raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def failed_gradescope(message: str, points: Points | None = None) -> str:
    """results.json for a submission that could not be graded at all (it answers no exercise):
    every exercise of the points file scores 0, and the message says why."""
    results = gradescope_results([], points)
    results["output"] = f"not graded: {message}"
    return json.dumps(results, indent=2) + "\n"


def write(text: str, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, text)
