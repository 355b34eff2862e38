"""`triptych check FILE|DIR`: grade a user's own implementation against the three backends.

Every function or class in FILE that has the name of an exercise is run in a sandboxed child
process (time and memory limits; its crashes are verdicts), on the exercise's cases, and compared
with NumPy, JAX and torch in this process; a failing output that matches a known mistake is named.
Exit codes: 0 all cases pass, 1 any case fails, 2 misuse (no such file, unknown exercise)."""
from __future__ import annotations

import os
import re

from common.console import add_report_flags

ORDER = 25


def _bytes(text: str) -> int:
    """'4GiB', '4G', '512M', '1.5g' or a plain number of GiB -> bytes."""
    from commands._common import CLIError

    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise CLIError(f"--memory-limit: expected a size such as 4GiB or 512M, got {text!r}")
    scale = {"": 1024**3, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * scale)


def register(sub) -> None:
    p = sub.add_parser("check", help="grade YOUR implementation (a .py or .ipynb file, or a folder of them)")
    p.add_argument("path", metavar="FILE|DIR", help="a .py or .ipynb file, or a folder of them (one row per file)")
    p.add_argument("--exercise", action="append", metavar="NAME",
                   help="grade only this exercise (repeatable; default: every exercise name the file defines)")
    p.add_argument("--framework", choices=["numpy", "torch", "jax"],
                   help="what your functions take and return (default: detected from the file's imports)")
    p.add_argument("--json", action="store_true", help="print a JSON list of case results (for autograders)")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S", help="seconds per case (default 20)")
    p.add_argument("--memory-limit", default="4GiB", metavar="SIZE", help="memory per run of your code (default 4GiB)")
    add_report_flags(p)  # --html FILE / --svg FILE: exactly what the terminal showed
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.progress import Progress

    from commands._common import CLIError, console, print_json, save_reports
    from crosscheck.report import json_rows, print_file_report, print_folder_summary
    from crosscheck.session import check_file, check_folder

    if args.timeout <= 0:
        raise CLIError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    options = dict(exercise_names=args.exercise, framework=args.framework, timeout_s=args.timeout,
                   memory_bytes=_bytes(args.memory_limit))
    if not os.path.exists(args.path):
        raise CLIError(f"check: no such file or folder: {args.path}")
    if os.path.isfile(args.path) and not args.path.endswith((".py", ".ipynb")):
        raise CLIError(f"check: expected a .py or .ipynb file, got {args.path}")
    if args.exercise:  # validate the names before any work
        from crosscheck import exercises

        for name in args.exercise:
            exercises.get(name)

    with Progress(console=console, transient=True, disable=args.json) as progress:
        task = progress.add_task("checking", total=None)

        def tick(done, total):
            progress.update(task, completed=done, total=total)

        if os.path.isdir(args.path):
            reports = check_folder(args.path, progress=tick, **options)
        else:
            reports = [check_file(args.path, progress=tick, **options)]

    folder = os.path.isdir(args.path)
    if args.json:
        print_json([row for rep in reports for row in json_rows(rep, with_file=folder)])
    else:
        if folder:
            print_folder_summary(console, reports)
        else:
            print_file_report(console, reports[0])
    save_reports(args)
    return 0 if all(rep.ok for rep in reports) else 1
