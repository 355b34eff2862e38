"""Grading a submission: a file (or a function object) against every exercise it answers.

check_file reads the file without running it (ast) to find which exercises it answers and which
framework it uses, runs it in one sandboxed worker, and judges each case in this process.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from common.checks import InputError
from crosscheck import exercises as catalogue
from crosscheck.grade import _row, judge, reference_outputs
from crosscheck.sandbox.runner import DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT_S, Worker
from crosscheck.sandbox.worker import read_source
from crosscheck.spec import Exercise

FRAMEWORKS = ("numpy", "torch", "jax")


@dataclass
class FileReport:
    path: str
    framework: str
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one-line remarks: "graded definitions only", ...

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)


def detect_framework(tree: ast.Module) -> str:
    """torch or JAX when the file imports them (torch wins when both appear), else NumPy."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    return "torch" if "torch" in imported else "jax" if "jax" in imported else "numpy"


def top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def parse_submission(path: str) -> tuple[ast.Module | None, str, str | None]:
    """(tree or None, source, syntax problem or None)."""
    if not os.path.isfile(path):
        raise InputError(f"file: expected a .py or .ipynb file, got {path!r} (no such file)")
    try:
        source, _ = read_source(path)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, "", f"cannot read {os.path.basename(path)}: {exc}"
    try:
        return ast.parse(source, filename=path), source, None
    except SyntaxError as exc:
        return None, source, f"{os.path.basename(path)} does not parse: line {exc.lineno}: {exc.msg}"


def select_exercises(tree: ast.Module, names: list[str] | None) -> list[Exercise]:
    if names:
        return [catalogue.get(n) for n in names]
    defined = top_level_names(tree)
    return [ex for ex in catalogue.all_exercises() if ex.defines in defined]


def expected_names_hint() -> str:
    by_group = catalogue.groups()
    return "; ".join(f"{g}: {', '.join(ex.defines for ex in exs[:4])}..." for g, (_, exs) in by_group.items())


def _target_for(ex: Exercise, case) -> dict:
    target = dict(ex.target)
    target.setdefault("dtype", case.dtype)
    if target.get("kind") == "class":
        target["dtype"] = case.dtype
    return target


def grade_cases(ex: Exercise, call: Callable[[dict, dict], dict], path_hint: str, progress=None) -> list[dict]:
    """Every case of one exercise; call(target, inputs) returns the child's (or in-process) reply."""
    rows = []
    for case in ex.cases:
        inputs = case.inputs(np.random.default_rng(case.seed), np.dtype(case.dtype))
        refs = reference_outputs(ex, inputs)
        reply = call(_target_for(ex, case), inputs)
        rows.append(judge(ex, case, inputs, refs, reply, path_hint))
        if progress is not None:
            progress()
    return rows


def check_file(path: str, exercise_names: list[str] | None = None, framework: str | None = None,
               timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES,
               progress: Callable[[int, int], None] | None = None) -> FileReport:
    """Grade one submission file. Raises InputError only for misuse (no such file, unknown exercise,
    a file that answers no exercise); everything the file does becomes rows."""
    tree, source, problem = parse_submission(path)
    name = os.path.basename(path)
    if framework is not None and framework not in FRAMEWORKS:
        raise InputError(f"framework: expected one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    if tree is None:
        exs = [catalogue.get(n) for n in exercise_names] if exercise_names else []
        report = FileReport(path, framework or "numpy", notes=[problem])
        report.rows = [_row(ex, case, verdict="error", message=problem) for ex in exs for case in ex.cases]
        if not exs:
            report.rows = [{"exercise": None, "group": None, "case": None, "ok": False, "verdict": "error",
                            "message": problem, "diagnosis": None, "max_abs_err": None, "tolerance": None}]
        return report
    exs = select_exercises(tree, exercise_names)
    if not exs:
        raise InputError(f"{name}: defines none of the exercise names (e.g. {expected_names_hint()}); "
                         f"`triptych exercise new GROUP --out FILE` writes a skeleton")
    report = FileReport(path, framework or detect_framework(tree))
    worker = Worker(path, report.framework, timeout_s=timeout_s, memory_bytes=memory_bytes)
    try:
        hello = worker.start()
        if not hello.get("ready"):
            err = hello.get("error") or {}
            why = (f"{err.get('type')}: {err.get('message')}" if err else
                   "it did not finish loading" if "timeout" in hello else f"it crashed ({hello.get('how', '')})")
            line = f" at line {err['frames'][-1][1]}" if err.get("frames") else ""
            # A notebook export carries prints, test calls and names from other cells: grade what is
            # defined rather than nothing.
            worker.mode = "definitions"
            hello = worker.start()
            report.notes.append(f"running {name} as a whole failed ({why}{line}); graded only its imports, "
                                f"functions, classes and constants")
        total = sum(len(ex.cases) for ex in exs)
        done = 0

        def tick():
            nonlocal done
            done += 1
            if progress:
                progress(done, total)

        for ex in exs:
            problems = ex.static(tree, source) if ex.static else []
            rows = grade_cases(ex, worker.call, name, tick)
            for r in rows:
                if problems and r["ok"]:
                    r.update(ok=False, verdict="FAIL", message=problems[0])
            report.rows.extend(rows)
    finally:
        worker.close()
    return report


def check_folder(folder: str, **kwargs) -> list[FileReport]:
    """Every .py and .ipynb file in a folder (a class's submissions), one report each. A file that
    answers no exercise gets one row saying so instead of stopping the run."""
    files = sorted(f for f in os.listdir(folder) if f.endswith((".py", ".ipynb")) and not f.startswith("."))
    if not files:
        raise InputError(f"folder: expected .py or .ipynb files in {folder!r}, found none")
    reports = []
    for f in files:
        path = os.path.join(folder, f)
        try:
            reports.append(check_file(path, **kwargs))
        except InputError as exc:
            reports.append(FileReport(path, "?", rows=[{"exercise": None, "group": None, "case": None, "ok": False,
                                                         "verdict": "missing", "message": str(exc),
                                                         "diagnosis": None, "max_abs_err": None,
                                                         "tolerance": None}]))
    return reports
