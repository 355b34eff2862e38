"""`triptych check FILE|DIR`: grade a user's own implementation against the three backends.

Every function or class in FILE that has the name of an exercise is run in a sandboxed child
process (time and memory limits; its crashes are verdicts), on the exercise's cases, and compared
with NumPy, JAX and torch in this process; a failing output that matches a known mistake is named.
On Linux that child is isolated (triptych/crosscheck/sandbox/isolation.py): it writes only in its
scratch folder, reads only its Python and its own submission, has no network, and leaves no process
behind; --isolation prints what holds on this kernel, --require-isolation refuses where any is off.
DIR is a package or project (one submission: a CS336 repository is graded through its
tests/adapters.py) or a class folder (one row per student file, package or project; -j N grades N
at once). --format gradescope|junit and --report write what a course's tools read (docs/gradescope.md).
Exit codes: 0 all cases pass, 1 any case fails, 2 misuse (no such file, unknown exercise); with
--json, misuse prints {"error": "..."} on stdout too."""
from __future__ import annotations

import os
import re
import time

from triptych.common.argtypes import count, output_file, positive_number
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
    p.add_argument("path", metavar="FILE|DIR", nargs="?", help="a .py or .ipynb file; a package or project folder (one "
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
    p.add_argument("--isolation", action="store_true",
                   help="print what walls the code runs behind on this kernel (files, network, processes, "
                        "rlimits: on/off and by what mechanism), and exit")
    p.add_argument("--require-isolation", action="store_true",
                   help="refuse to run (exit 2) where any of those protections is off")
    add_report_flags(p)  # --html FILE / --svg FILE: exactly what the terminal showed
    # A class: grading several students at once, and what a course's tools read (docs/gradescope.md).
    p.add_argument("-j", "--jobs", type=count(), metavar="N",
                   help="grade N submissions of a class folder at once (default: one per core)")
    p.add_argument("--format", choices=["text", "gradescope", "junit"], default="text",
                   help="gradescope: Gradescope's results.json, the whole path as ONE student's submission; "
                        "junit: JUnit XML for any CI (a testsuite per submission). Written to --out (gradescope "
                        "without --out: /autograder/results/results.json inside Gradescope's container); "
                        "without --out, printed instead of the report")
    p.add_argument("--points", metavar="FILE",
                   help="with --format gradescope: points per exercise and hidden cases (TOML or JSON; "
                        "triptych/crosscheck/classroom/points.py)")
    p.add_argument("--pack", action="append", metavar="FILE",
                   help="a teacher's exercise pack (a .py file or module defining GROUP, TITLE, EXERCISES; "
                        "repeatable; docs/exercise_packs.md)")
    p.add_argument("--out", metavar="PATH", type=output_file, help="where --format writes its file")
    p.add_argument("--report", metavar="HTML", type=output_file,
                   help="also write a class page (pass rates, mistakes charted, conventions, every student's "
                        "verdicts) and each student's report beside it in HTML_files/")
    p.set_defaults(func=run)


def run(args) -> int:
    from triptych.common.checks import InputError

    try:
        return _run(args)
    except InputError as exc:
        if getattr(args, "format", "text") == "gradescope":
            _gradescope_not_graded(args, str(exc))
        if not args.json:
            raise
        # An autograder reads stdout as JSON whatever happens: misuse is an object, not plain text.
        from triptych.commands._common import print_json

        print_json({"error": str(exc)})
        return 2


def _gradescope_not_graded(args, message: str) -> None:
    """Gradescope shows the student only results.json: a submission we cannot grade (it answers no
    exercise) still gets one, with score 0 and the reason."""
    from triptych.common.checks import InputError
    from triptych.crosscheck.classroom import outputs
    from triptych.crosscheck.classroom.points import load_points

    try:
        points = load_points(args.points) if args.points else None
    except InputError:
        points = None
    text = outputs.failed_gradescope(message, points)
    path = outputs.destination("gradescope", args.out)
    if path:
        outputs.write(text, path)


def _class_options(args):
    """Check the class flags before any grading; returns the points file's Points or None."""
    from triptych.commands._common import CLIError

    if args.format == "text" and (args.out or args.points):
        raise CLIError(f"check: {'--out' if args.out else '--points'} goes with --format gradescope or junit")
    if args.points and args.format != "gradescope":
        raise CLIError("check: --points goes with --format gradescope")
    if args.json and args.format != "text":
        raise CLIError(f"check: --json and --format {args.format} both choose the output; give one")
    if args.points:
        from triptych.crosscheck.classroom.points import load_points

        return load_points(args.points)
    return None


def _class_outputs(args, reports, points, elapsed: float, to_stdout: bool) -> None:
    """--format's document (to --out, Gradescope's place, or stdout) and --report's pages."""
    import sys

    from triptych.commands._common import console

    if args.format != "text":
        from triptych.crosscheck.classroom import outputs

        text = outputs.document(args.format, reports, points, elapsed)
        if to_stdout:
            sys.stdout.write(text)
        else:
            path = outputs.destination(args.format, args.out)
            outputs.write(text, path)
            console.print(f"wrote {path}")
    if args.report:
        from triptych.crosscheck.classroom.class_report import write_class_report

        written = write_class_report(reports, args.report, title=f"triptych check {os.path.basename(os.path.abspath(args.path))}")
        console.print(f"wrote {args.report} and {len(written) - 1} student pages beside it")


def _run(args) -> int:
    from rich.progress import Progress

    from triptych.commands._common import CLIError, console, print_json, save_reports
    from triptych.crosscheck.report import json_rows, print_file_report, print_folder_summary
    from triptych.crosscheck.session import check_path, is_submission_folder, validate_python

    if args.isolation:
        return _print_isolation(args)
    if args.path is None:
        raise CLIError("check: expected FILE|DIR (or --isolation)")
    if args.timeout <= 0:
        raise CLIError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    options = dict(exercise_names=args.exercise, framework=args.framework, timeout_s=args.timeout,
                   memory_bytes=_bytes(args.memory_limit))
    if not os.path.exists(args.path):
        raise CLIError(f"check: no such file or folder: {args.path}")
    if os.path.isfile(args.path) and not args.path.endswith((".py", ".ipynb")):
        raise CLIError(f"check: expected a .py or .ipynb file, got {args.path}")
    from triptych.crosscheck import exercises

    exercises.use_packs(args.pack)  # a teacher's pack joins the catalogue before names are read
    if args.exercise:  # validate the names before any work
        for name in args.exercise:
            exercises.get(name)
    if args.python:
        options["python"] = validate_python(args.python)
    _isolation_gate(args.require_isolation)

    points = _class_options(args)
    if args.format != "text":
        from triptych.crosscheck.classroom.outputs import destination

        to_stdout = destination(args.format, args.out) is None  # the document alone on stdout, like --json
    else:
        to_stdout = False
    started = time.monotonic()
    with Progress(console=console, transient=True, disable=args.json or to_stdout) as progress:
        task = progress.add_task("checking", total=None)

        def tick(done, total):  # called from the grading threads: rich's Progress takes a lock
            progress.update(task, completed=done, total=total)

        reports = check_path(args.path, progress=tick, jobs=args.jobs, **options)

    folder = os.path.isdir(args.path) and not is_submission_folder(args.path)  # a class: one row per student
    if args.json:
        print_json([row for rep in reports for row in json_rows(rep, with_file=folder)])
    elif not to_stdout:
        if folder:
            print_folder_summary(console, reports)
        else:
            print_file_report(console, reports[0], verbose=args.verbose)
    _class_outputs(args, reports, points, time.monotonic() - started, to_stdout)
    save_reports(args)
    return 0 if all(rep.ok for rep in reports) else 1


def _print_isolation(args) -> int:
    """`check --isolation`: the protections of triptych/crosscheck/sandbox/isolation.py, measured."""
    from rich.table import Table

    from triptych.commands._common import console
    from triptych.crosscheck.sandbox import protections

    table = Table("protection", "state", "mechanism", "what it means")
    for key, meaning, state, how in protections.table(protections.probe()):
        table.add_row(key, state, how, meaning)
    console.print(table)
    return 0


def _isolation_gate(require: bool) -> None:
    """One line (stderr: --json keeps stdout) for each protection that is off; with
    --require-isolation, a refusal instead."""
    import sys

    from triptych.commands._common import CLIError
    from triptych.crosscheck.sandbox import protections

    line = protections.off_line(protections.probe())
    if line and require:
        raise CLIError(f"check --require-isolation: {line}")
    if line:
        sys.stderr.write(line + "\n")
