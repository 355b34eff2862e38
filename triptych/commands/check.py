"""`triptych check FILE|DIR`: grade a user's own implementation against the three backends.

Every function or class in FILE that has the name of an exercise is run in a sandboxed child
process (time and memory limits; its crashes are verdicts), on the exercise's cases, and compared
with NumPy, JAX and torch in this process; a failing output that matches a known mistake is named.
DIR is a package or project (one submission: a CS336 repository is graded through its
tests/adapters.py) or a class folder (one row per student file, package or project).
Exit codes: 0 all cases pass, 1 any case fails, 2 misuse (no such file, unknown exercise); with
--json, misuse prints {"error": "..."} on stdout too."""
from __future__ import annotations

import os
import re

from triptych.common.argtypes import positive_number
from triptych.common.console import add_report_flags

ORDER = 25


def _bytes(text: str) -> int:
    """'4GiB', '4G', '512M', '1.5g' or a plain number of GiB -> bytes."""
    from triptych.commands._common import CLIError

    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise CLIError(f"--memory-limit: expected a size such as 4GiB or 512M, got {text!r}")
    scale = {"": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * scale)


def register(sub) -> None:
    p = sub.add_parser("check", help="grade YOUR implementation (a .py or .ipynb file, a package or CS336 "
                                     "repository, or a folder of submissions)")
    p.add_argument("path", metavar="FILE|DIR", help="a .py or .ipynb file; a package or project folder (one "
                                                    "submission); or a folder of them (one row each)")
    p.add_argument("--exercise", action="append", metavar="NAME",
                   help="grade only this exercise (repeatable; default: every exercise name the file defines)")
    p.add_argument("--framework", choices=["numpy", "torch", "jax"],
                   help="what your functions take and return (default: what your code imports when it loads)")
    p.add_argument("--python", metavar="PATH",
                   help="run your code under this interpreter (your own torch and packages, e.g. a CS336 "
                        "uv environment's .venv/bin/python); it needs only NumPy. Default: triptych's own")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show every exercise's table of cases (default: one line per exercise, and the table "
                        "only for one with a failing case)")
    p.add_argument("--json", action="store_true", help="print a JSON list of case results (for autograders)")
    p.add_argument("--timeout", type=positive_number(), default=20.0, metavar="S", help="seconds per case (default 20)")
    p.add_argument("--memory-limit", default="4GiB", metavar="SIZE", help="memory per run of your code (default 4GiB)")
    add_report_flags(p)  # --html FILE / --svg FILE: exactly what the terminal showed
    p.set_defaults(func=run)


def run(args) -> int:
    from triptych.common.checks import InputError

    try:
        return _run(args)
    except InputError as exc:
        if not args.json:
            raise
        # An autograder reads stdout as JSON whatever happens: misuse is an object, not plain text.
        from triptych.commands._common import print_json

        print_json({"error": str(exc)})
        return 2


def _run(args) -> int:
    from rich.progress import Progress

    from triptych.commands._common import CLIError, console, print_json, save_reports
    from triptych.crosscheck.report import json_rows, print_file_report, print_folder_summary
    from triptych.crosscheck.session import check_path, is_submission_folder, validate_python

    if args.timeout <= 0:
        raise CLIError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    options = dict(exercise_names=args.exercise, framework=args.framework, timeout_s=args.timeout,
                   memory_bytes=_bytes(args.memory_limit))
    if not os.path.exists(args.path):
        raise CLIError(f"check: no such file or folder: {args.path}")
    if os.path.isfile(args.path) and not args.path.endswith((".py", ".ipynb")):
        raise CLIError(f"check: expected a .py or .ipynb file, got {args.path}")
    if args.exercise:  # validate the names before any work
        from triptych.crosscheck import exercises

        for name in args.exercise:
            exercises.get(name)
    if args.python:
        options["python"] = validate_python(args.python)

    with Progress(console=console, transient=True, disable=args.json) as progress:
        task = progress.add_task("checking", total=None)

        def tick(done, total):
            progress.update(task, completed=done, total=total)

        reports = check_path(args.path, progress=tick, **options)

    folder = os.path.isdir(args.path) and not is_submission_folder(args.path)  # a class: one row per student
    if args.json:
        print_json([row for rep in reports for row in json_rows(rep, with_file=folder)])
    else:
        if folder:
            print_folder_summary(console, reports)
        else:
            print_file_report(console, reports[0], verbose=args.verbose)
    save_reports(args)
    return 0 if all(rep.ok for rep in reports) else 1
