"""`python cli.py lesson NAME|list [--json]`: guided walkthroughs of the course exercises (package `lessons`).

Every number is computed when the lesson runs (NumPy first, JAX and torch beside it); nothing is
read from a table of answers. `lesson list` names the lessons; `--json` prints the computed values.
Exit code 1 when a lesson's numbers disagree with their reference."""
from __future__ import annotations

from triptych.common.argtypes import Default, output_dir, text
from triptych.common.console import add_report_flags

ORDER = 20


def register(sub) -> None:
    from triptych.lessons import LESSONS

    p = sub.add_parser("lesson", help="guided lessons: crafted queries, argmax attention, subspaces, tokenizers, ...")
    p.add_argument("name", metavar="NAME", type=text, help=f"'list', or one of: {', '.join(LESSONS)}")
    p.add_argument("--json", action="store_true", help="print the lesson's computed values as JSON")
    p.add_argument("--out", type=output_dir, default=Default("runs/lessons"),
                   help="folder for the lesson's PNG plot, when it has one (default runs/lessons; not with --json)")
    add_report_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from triptych.commands._common import console, print_json, save_reports
    from triptych.common.invocation import command
    from triptych.lessons import LESSONS, load_lesson

    if args.name == "list":
        if args.json:
            print_json([{"name": n, "description": d} for n, (_, d) in LESSONS.items()])
            save_reports(args)
            return 0
        from rich.table import Table

        table = Table(title=command("lesson", "NAME"), show_lines=False)
        table.add_column("NAME", style="bold cyan", no_wrap=True)
        table.add_column("what it shows")
        for name, (_, description) in LESSONS.items():
            table.add_row(name, description)
        console.print(table)
        save_reports(args)
        return 0

    if args.json:
        lesson = load_lesson(args.name)
        result = lesson.compute()
        print_json(lesson.to_json(result))
        passed = lesson.passed(result)
    else:
        # The same object a notebook displays (lessons.run): the panels replayed here, then the plot's path.
        from triptych.lessons import run as run_lesson

        view = run_lesson(args.name, out=args.out)
        view.print_to(console)
        passed = view.passed
    save_reports(args)
    # A lesson whose numbers disagree with their reference (torch, the library it teaches) says so.
    return 0 if passed else 1
