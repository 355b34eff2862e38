"""`check --points FILE`: what each exercise is worth, and which cases students do not see.

The file is TOML (a .toml name) or JSON (any other name), e.g. in TOML:

    stdout_visibility = "hidden"        # optional: who sees the autograder's stdout on Gradescope
    [exercises]
    split_heads = 2                     # 2 points, every case visible
    [exercises.self_attention]
    points = 4
    hidden = ["batch 2, 3 heads, causal"]   # these cases form a test of their own ...
    hidden_visibility = "after_published"   # ... shown then (default "hidden": never to the student)
    visibility = "visible"                  # the visible cases' test (default "visible")

The exercises listed are the assignment: one missing from a submission scores 0. Without a file,
every exercise the submission answers is worth one point and every case is visible.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field

from triptych.common.checks import InputError
from triptych.crosscheck import exercises as catalogue

# Gradescope's visibility settings (gradescope-autograders.readthedocs.io, "Autograder Specifications").
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


@dataclass(frozen=True)
class Weight:
    points: float = 1.0
    hidden: tuple[str, ...] = ()  # case names graded in a test of their own
    visibility: str = "visible"
    hidden_visibility: str = "hidden"


@dataclass(frozen=True)
class Points:
    exercises: dict[str, Weight] = field(default_factory=dict)  # empty: every answered exercise, 1 point
    stdout_visibility: str = "hidden"

    def weight(self, exercise: str) -> Weight:
        return self.exercises.get(exercise, Weight())


def _visibility(value, where: str) -> str:
    if value not in VISIBILITIES:
        raise InputError(f"--points: {where}: expected one of {', '.join(VISIBILITIES)}, got {value!r}")
    return value


def _weight(name: str, entry) -> Weight:
    ex = catalogue.get(name)  # an unknown name: InputError naming it and the known ones
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        entry = {"points": entry}
    if not isinstance(entry, dict):
        raise InputError(f"--points: exercises.{name}: expected a number of points or a table, got {entry!r}")
    unknown = set(entry) - {"points", "hidden", "visibility", "hidden_visibility"}
    if unknown:
        raise InputError(f"--points: exercises.{name}: unknown keys {', '.join(sorted(unknown))} (expected points, "
                         f"hidden, visibility, hidden_visibility)")
    points = entry.get("points", 1.0)
    if isinstance(points, bool) or not isinstance(points, (int, float)) or points < 0:
        raise InputError(f"--points: exercises.{name}.points: expected a number >= 0, got {points!r}")
    hidden = entry.get("hidden", [])
    cases = [c.name for c in ex.cases]
    hidden = cases if hidden is True else hidden
    if not isinstance(hidden, list) or any(h not in cases for h in hidden):
        raise InputError(f"--points: exercises.{name}.hidden: expected true or a list of its case names "
                         f"({'; '.join(cases)}), got {hidden!r}")
    return Weight(float(points), tuple(hidden), _visibility(entry.get("visibility", "visible"), f"{name}.visibility"),
                  _visibility(entry.get("hidden_visibility", "hidden"), f"{name}.hidden_visibility"))


def parse_points(data) -> Points:
    """A Points from the file's parsed contents; InputError naming the key for anything wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("exercises"), dict):
        raise InputError("--points: expected an [exercises] table (exercise name = points), got "
                         f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    unknown = set(data) - {"exercises", "stdout_visibility"}
    if unknown:
        raise InputError(f"--points: unknown keys {', '.join(sorted(unknown))} (expected exercises, stdout_visibility)")
    return Points({name: _weight(name, entry) for name, entry in data["exercises"].items()},
                  _visibility(data.get("stdout_visibility", "hidden"), "stdout_visibility"))


def load_points(path: str) -> Points:
    """Read a points file (TOML or JSON)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise InputError(f"--points: cannot read {path!r}: {exc.strerror or exc}") from None
    text = raw.decode("utf-8", "replace")
    is_toml = os.path.splitext(path)[1].lower() == ".toml"
    try:
        data = tomllib.loads(text) if is_toml else json.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise InputError(f"--points: {path} is not valid {'TOML' if is_toml else 'JSON'}: {exc}") from None
    return parse_points(data)
