"""`check --format gradescope`: the results.json Gradescope's autograder harness uploads.

Gradescope runs the autograder once per student, on the files the student handed in
(/autograder/submission); the format is described in "Autograder Specifications",
gradescope-autograders.readthedocs.io/en/latest/specs/. Here: one test per exercise, its score the
exercise's points times the share of its graded cases that pass (partial credit per case), its
output one line per case. Cases a points file hides form a second test for the exercise with its
own visibility. The top level carries score, execution_time, output (the notes),
stdout_visibility and extra_data (max_score: the tests' total). docs/gradescope.md shows the
setup.sh and run_autograder that use it.
"""
from __future__ import annotations

from triptych.crosscheck.classroom.outcome import case_line, graded, problems, rows_by_exercise
from triptych.crosscheck.classroom.points import Points, Weight

# Where Gradescope's harness reads the results from (its specification's file hierarchy).
GRADESCOPE_RESULTS = "/autograder/results/results.json"


def _round(x: float) -> float:
    return round(x, 4)  # a third of a point prints as 0.3333, not 0.33333333333333337


def _test(name: str, rows: list[dict], max_score: float, visibility: str) -> dict:
    counted = [r for r in rows if graded(r)]
    passed = sum(bool(r["ok"]) for r in counted)
    score = max_score * passed / len(counted) if counted else 0.0
    head = f"{passed}/{len(counted)} cases pass"
    return {"name": name, "score": _round(score), "max_score": _round(max_score),
            "status": "passed" if counted and passed == len(counted) else "failed",
            "output": "\n".join([head, *(case_line(r) for r in rows)]), "visibility": visibility}


def _missing_test(name: str, weight: Weight) -> dict:
    return {"name": name, "score": 0.0, "max_score": _round(weight.points), "status": "failed",
            "output": f"no file of the submission defines `{name}`", "visibility": weight.visibility}


def exercise_tests(name: str, rows: list[dict], weight: Weight) -> list[dict]:
    """The exercise's test, and a second one for its hidden cases when the points file hides some.
    Points are shared between the two by number of cases."""
    shown = [r for r in rows if r["case"] not in weight.hidden]
    hidden = [r for r in rows if r["case"] in weight.hidden]
    n = len(rows) or 1
    tests = []
    if shown:
        tests.append(_test(name, shown, weight.points * len(shown) / n, weight.visibility))
    if hidden:
        tests.append(_test(f"{name} (hidden cases)", hidden, weight.points * len(hidden) / n,
                           weight.hidden_visibility))
    return tests


def gradescope_results(reports: list, points: Points | None = None, execution_time: float | None = None) -> dict:
    """results.json for one student's submission (all of `reports` belong to that student: the
    files of /autograder/submission). With points, the exercises it lists are the assignment, in its
    order; without, every exercise answered counts one point."""
    points = points or Points()
    found = rows_by_exercise(reports)
    names = list(points.exercises) if points.exercises else list(found)
    tests = []
    for name in names:
        weight = points.weight(name)
        tests.extend(exercise_tests(name, found[name], weight) if name in found else [_missing_test(name, weight)])
    frameworks = sorted({rep.framework for rep in reports if rep.framework != "?"})
    notes = problems(reports)
    output = "\n".join([f"graded as {', '.join(frameworks) or 'nothing'} code against NumPy, JAX and torch "
                        "(triptych check)", *(f"note: {n}" for n in notes)])
    # The documented top level has no max_score (Gradescope takes the assignment's points from its
    # settings; each test carries its own): the total is kept in extra_data, which the format stores.
    results = {"score": _round(sum(t["score"] for t in tests)), "output": output,
               "stdout_visibility": points.stdout_visibility, "tests": tests,
               "extra_data": {"max_score": _round(sum(t["max_score"] for t in tests)), "frameworks": frameworks}}
    if execution_time is not None:
        results["execution_time"] = int(round(execution_time))
    return results
