"""Grading a submission: a file, a package or project, or a class folder of them.

check_file reads the file without running it (ast) to find which exercises it answers and which
framework it probably uses, runs it in one sandboxed worker (which reports what the code really
imported: the framework follows that), and judges each case in this process. check_path also takes
a package or project folder (one submission: CS336's tests/adapters.py, or the package's modules
that define exercise names) and a class folder (one report per student file, package or project,
several graded at once: classroom/parallel.py). What a class's grades become (Gradescope, JUnit, a
class page) lives in classroom/.
"""
from __future__ import annotations

import ast
import os
import sys
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from triptych.common.checks import InputError
from triptych.common.invocation import command
from triptych.crosscheck import exercises as catalogue
from triptych.crosscheck.classroom.parallel import map_in_order
from triptych.crosscheck.grade import order_failures, _row, judge
from triptych.crosscheck.notes import _load_problem, import_note, missing_note, skipped_note
from triptych.crosscheck.reference_cache import references
from triptych.crosscheck.sandbox import loader
from triptych.crosscheck.sandbox.loader import read_source
from triptych.crosscheck.sandbox.runner import DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT_S, Worker
from triptych.crosscheck.spec import Exercise

FRAMEWORKS = ("numpy", "torch", "jax")


@dataclass
class FileReport:
    path: str
    framework: str
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one-line remarks: skipped statements, missing names

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(r["ok"] for r in self.rows)

    # A notebook shows the table `triptych check` prints (triptych/crosscheck/report.py); print() its text.
    def _repr_html_(self) -> str:
        from triptych.crosscheck.report import NOTEBOOK_WIDTH, file_report_renderables, renderables_html

        return renderables_html(file_report_renderables(self, NOTEBOOK_WIDTH))

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self) if cycle else str(self))

    def __str__(self) -> str:
        from triptych.crosscheck.report import NOTEBOOK_WIDTH, file_report_renderables, renderables_text

        return renderables_text(file_report_renderables(self, NOTEBOOK_WIDTH))

    def __repr__(self) -> str:
        from triptych.crosscheck.report import short_repr

        return short_repr("FileReport", self.path, self.framework, self.rows, self.ok)


def detect_framework(tree: ast.Module) -> str:
    """torch or JAX when the file imports them (torch wins when both appear), else NumPy."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    return "torch" if "torch" in imported else "jax" if "jax" in imported else "numpy"


def top_level_names(tree: ast.Module, own_packages: frozenset = frozenset()) -> tuple[set[str], set[str]]:
    """(names the module defines at its top level, names it imports from the submission's own code:
    a relative import, or one of `own_packages`, e.g. a glue file's `from cs336_basics.nn import
    softmax`). Names imported from libraries are neither."""
    names, imported = set(), set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in own_packages):
            imported.update(a.asname or a.name for a in node.names if a.name != "*")
    return names, imported - names


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
        return None, source, (f"{os.path.basename(path)} does not parse: line {exc.lineno}: {exc.msg} (if it runs "
                              f"under your own Python, it uses syntax newer than Python "
                              f"{sys.version_info[0]}.{sys.version_info[1]}, which reads it here)")


def select_exercises(tree: ast.Module, names: list[str] | None, path: str | None = None) -> list[Exercise]:
    if names:
        return [catalogue.get(n) for n in names]
    own = frozenset(loader.local_packages(loader.locate(path)[0])) if path else frozenset()
    defined, imported = top_level_names(tree, own)
    exs = [ex for ex in catalogue.all_exercises() if ex.defines in defined]
    # A name imported from the user's own package is graded in a group the file answers itself, or
    # when the file defines none (pure glue). A CS336 adapters.py imports the package's softmax to
    # write run_softmax: the cs336 group is graded, not the blocks exercise that happens to share it.
    groups = {ex.group for ex in exs}
    return [ex for ex in catalogue.all_exercises()
            if ex.defines in defined or (ex.defines in imported and (not exs or ex.group in groups))]


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
        refs = references(ex, case, inputs)  # computed once per case, shared by every submission
        reply = call(_target_for(ex, case), inputs)
        rows.append(judge(ex, case, inputs, refs, reply, path_hint))
        if progress is not None:
            progress()
    return rows


def validate_python(python: str) -> str:
    """--python: an existing executable that can import NumPy (all the child needs besides the
    user's framework). Returns its absolute path; raises InputError with one line otherwise."""
    path = os.path.abspath(os.path.expanduser(python))
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise InputError(f"--python: expected an executable Python interpreter, got {python!r} "
                         f"({'not executable' if os.path.exists(path) else 'no such file'})")
    try:
        # The child's own files need Python 3.8+ (importlib.metadata, `from __future__ import annotations`).
        done = subprocess.run([path, "-I", "-c", "import sys; assert sys.version_info >= (3, 8), "
                               "'Python ' + sys.version.split()[0] + ' is older than 3.8'; import numpy"],
                              capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"--python: cannot run {python!r}: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["?"])[-1]
        raise InputError(f"--python: {python!r} cannot run the checker's child ({last}); it needs Python 3.8+ "
                         f"with numpy installed")
    return path


def _unparsable(path: str, framework: str | None, exercise_names: list[str] | None, problem: str) -> FileReport:
    """A file that cannot be read or parsed: every case of the exercises asked for says why (one
    row when none were asked for)."""
    exs = [catalogue.get(n) for n in exercise_names] if exercise_names else []
    report = FileReport(path, framework or "numpy", notes=[problem])
    report.rows = [_row(ex, case, verdict="error", message=problem) for ex in exs for case in ex.cases]
    if not exs:
        report.rows = [{"exercise": None, "group": None, "case": None, "ok": False, "verdict": "error",
                        "message": problem, "diagnosis": None, "max_abs_err": None, "tolerance": None}]
    return report


def _load(worker: Worker, report: FileReport, framework: str | None) -> dict:
    """Start the child; its hello. The framework follows what the code really imported unless the
    user named one."""
    hello = worker.start()
    loaded = hello.get("loaded") or []
    found = "torch" if "torch" in loaded else "jax" if "jax" in loaded else report.framework
    if framework is None and hello.get("ready") and found != report.framework:
        # The file's own imports guessed wrong (a glue file that gets torch through the student's
        # package): start once more with the framework the code actually loaded.
        report.framework = worker.framework = found
        hello = worker.start()
    return hello


def _caller(worker: Worker, hello: dict, report: FileReport, name: str) -> Callable[[dict, dict], dict]:
    """worker.call, or for code that does not load at all (the user's own import error) a reply
    saying why for every case, without a restart per case."""
    if hello.get("ready"):
        return worker.call
    report.notes.append(_load_problem(hello, name))
    crash = {k: hello[k] for k in ("timeout", "died", "how", "memory") if k in hello}
    reply = crash or {"load_error": hello}
    return lambda target, inputs: reply


def _grade_exercises(exs: list[Exercise], tree: ast.Module, source: str, call, name: str,
                     progress: Callable[[int, int], None] | None) -> list[dict]:
    """Every case of every exercise, a static problem (ex.static: what running cannot see) turning
    a pass into a FAIL; progress(done, total) after each case."""
    total, done = sum(len(ex.cases) for ex in exs), 0

    def tick():
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    rows = []
    for ex in exs:
        problems = ex.static(tree, source) if ex.static else []
        for r in grade_cases(ex, call, name, tick):
            if problems and r["ok"] and r["verdict"] == "pass":
                r.update(ok=False, verdict="FAIL", message=problems[0])
            rows.append(r)
    order_failures(rows, source)  # "fix `softmax` first": a failing part before its whole
    return rows


def check_file(path: str, exercise_names: list[str] | None = None, framework: str | None = None,
               timeout_s: float = DEFAULT_TIMEOUT_S, memory_bytes: int = DEFAULT_MEMORY_BYTES,
               progress: Callable[[int, int], None] | None = None, python: str | None = None) -> FileReport:
    """Grade one submission file. Raises InputError only for misuse (no such file, unknown exercise,
    a file that answers no exercise); everything the file does becomes rows."""
    tree, source, problem = parse_submission(path)
    name = os.path.basename(path)
    if framework is not None and framework not in FRAMEWORKS:
        raise InputError(f"framework: expected one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    if tree is None:
        return _unparsable(path, framework, exercise_names, problem)
    exs = select_exercises(tree, exercise_names, path)
    if not exs:
        raise InputError(f"{name}: defines none of the exercise names (e.g. {expected_names_hint()}); "
                         f"`{command('exercise', 'new', 'GROUP', '--out', 'FILE')}` writes a skeleton")
    report = FileReport(path, framework or detect_framework(tree))
    worker = Worker(path, report.framework, timeout_s=timeout_s, memory_bytes=memory_bytes, python=python,
                    cwd=loader.locate(path)[0])
    try:
        hello = _load(worker, report, framework)
        for note in (skipped_note(hello.get("skipped") or []), None if exercise_names else missing_note(tree, exs),
                     import_note(hello)):
            if note:
                report.notes.append(note)
        call = _caller(worker, hello, report, name)
        report.rows.extend(_grade_exercises(exs, tree, source, call, name, progress))
        late = [f for f in worker.case_fixes if f not in (hello.get("case_fixes") or [])]
        if late:  # imports made inside the user's functions, found under a name in another case
            report.notes.append(import_note({"case_fixes": late}))
    finally:
        worker.close()
    return report


def _package_modules(folder: str) -> list[str]:
    """The .py files of the packages in a project or package folder (tests/ and hidden folders left out)."""
    if loader.is_package(folder):
        tops = [folder]
    else:
        tops = [os.path.join(base, e) for base in (folder, os.path.join(folder, "src")) if os.path.isdir(base)
                for e in sorted(os.listdir(base)) if loader.is_package(os.path.join(base, e)) and e != "tests"]
    files = []
    for top in tops:
        for here, dirs, names in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")) and loader.is_package(os.path.join(here, d)))
            files.extend(os.path.join(here, n) for n in sorted(names) if n.endswith(".py"))
    return files


def is_submission_folder(folder: str) -> bool:
    """A package or a project is one submission; any other folder is a class of them."""
    return loader.is_package(folder) or loader.is_project(folder)


def check_project(folder: str, exercise_names: list[str] | None = None, **kwargs) -> FileReport:
    """A package or project folder as ONE submission. A CS336 repository is graded through the file
    its students fill in, tests/adapters.py; otherwise each module of its packages that defines
    exercise names is graded (an exercise once, in the first module that defines it)."""
    adapters = os.path.join(folder, "tests", "adapters.py")
    if os.path.isfile(adapters):
        return check_file(adapters, exercise_names, **kwargs)
    wanted = set(exercise_names or [])
    merged = FileReport(folder, kwargs.get("framework") or "numpy")
    graded: set[str] = set()
    for path in _package_modules(folder):
        tree, _, _ = parse_submission(path)
        if tree is None:
            continue
        names = [ex.name for ex in select_exercises(tree, None, path) if ex.name not in graded
                 and (not wanted or ex.name in wanted)]
        if not names:
            continue
        report = check_file(path, names, **kwargs)
        graded.update(names)
        merged.framework = report.framework
        merged.rows.extend(report.rows)
        merged.notes.extend(f"{os.path.relpath(path, folder)}: {n}" for n in report.notes)
    missing = wanted - graded
    if not graded or missing:
        what = ", ".join(sorted(missing)) if missing else "none of the exercise names"
        raise InputError(f"{folder}: its packages define {what} (e.g. {expected_names_hint()})")
    return merged


def check_path(path: str, jobs: int | None = None, **kwargs) -> list[FileReport]:
    """A file, a package or project folder (one report), or a class folder (one report each,
    `jobs` submissions at a time: check_folder)."""
    if os.path.isdir(path):
        if is_submission_folder(path):
            return [check_project(path, **kwargs)]
        return check_folder(path, jobs=jobs, **kwargs)
    return [check_file(path, **kwargs)]


def check_submission(path: str, **kwargs) -> FileReport:
    """One entry of a class folder: a file, or a package or project folder. One that answers no
    exercise gets one row saying so instead of stopping the class's run."""
    try:
        return check_project(path, **kwargs) if os.path.isdir(path) else check_file(path, **kwargs)
    except InputError as exc:
        return FileReport(path, "?", rows=[{"exercise": None, "group": None, "case": None, "ok": False,
                                            "verdict": "missing", "message": str(exc), "diagnosis": None,
                                            "max_abs_err": None, "tolerance": None}])


def check_folder(folder: str, jobs: int | None = None, progress: Callable[[int, int], None] | None = None,
                 **kwargs) -> list[FileReport]:
    """A class's submissions: every .py and .ipynb file, and every package or project subfolder,
    one report each, in the order of their names. `jobs` of them are graded at once (default: one
    per core; classroom.parallel); progress(done, total) counts the cases of all of them."""
    entries = sorted(f for f in os.listdir(folder) if not f.startswith(".") and (
        f.endswith((".py", ".ipynb")) or is_submission_folder(os.path.join(folder, f))))
    if not entries:
        raise InputError(f"folder: expected .py or .ipynb files (or package folders) in {folder!r}, found none")
    paths = [os.path.join(folder, f) for f in entries]
    return map_in_order(lambda path, tick: check_submission(path, progress=tick, **kwargs), paths, jobs, progress)
