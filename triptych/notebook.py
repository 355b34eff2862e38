"""The notebook magics: `%%check`, `%check NAME`, `%exercise` and `%lesson`.

Grading runs in the same sandboxed worker as `triptych check FILE` (crosscheck.session.check_file,
the same time and memory limits): the code is written to a file in a temporary folder, so an
endless loop or a crash becomes a verdict and the kernel survives. The file holds the code and,
above it, the import statements of the notebook's cells (the `import numpy as np` of the first
cell), so the code loads there as it does in the kernel.

`%%check` then runs the cell in the kernel like any other cell, so its definitions exist
afterwards, unless loading it in the worker hung or crashed the process: then the kernel would
hang or die the same way, so the cell is not run and a line says so.

Misuse (an unknown exercise, no such name, a bad option) prints one line, without a traceback.
"""
from __future__ import annotations

import argparse
import ast
import inspect
import os
import re
import shlex
import sys
import tempfile
import warnings

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from triptych.common.checks import InputError
from triptych.crosscheck.notebook_code import cell_helpers, definition_source, helper_sources, history_imports

# The cell's file in the temporary folder; its name shows nowhere (frames and notes are renamed).
CELL_FILE = "notebook_cell.py"
# Signs, in a report's notes, that loading the code hung or killed the worker: crosscheck.session's
# _load_problem and skipped_note wordings (a top-level statement interrupted by the loader's limit).
_UNSAFE = ("did not finish within", "crashed the process running it", "took over")


class _Parser(argparse.ArgumentParser):
    """argparse that raises InputError (one printed line) instead of exiting the kernel's cell."""

    def error(self, message):
        raise InputError(f"{self.prog}: {message}")

    def exit(self, status=0, message=None):
        raise InputError(message.strip() if message else f"{self.prog}: see the usage above")


def _grading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--framework", choices=["numpy", "torch", "jax"],
                   help="what your functions take and return (default: what the code imports)")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S", help="seconds per case (default 20)")
    p.add_argument("--memory-limit", default="4GiB", metavar="SIZE", help="memory per run (default 4GiB)")
    _pack_option(p)


def _pack_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", action="append", metavar="FILE",
                   help="a teacher's exercise pack (docs/exercise_packs.md); it stays for the kernel's later cells")


def _parse(parser: argparse.ArgumentParser, line: str) -> argparse.Namespace:
    """A magic's arguments; its packs join the catalogue before any exercise name is read, as
    `check --pack` does."""
    from triptych.crosscheck.exercises import use_packs

    args = parser.parse_args(shlex.split(line))
    use_packs(args.pack)
    return args


def _parsers() -> dict[str, argparse.ArgumentParser]:
    cell = _Parser(prog="%%check", add_help=False)
    cell.add_argument("exercises", nargs="*", metavar="EXERCISE")
    _grading_options(cell)
    line = _Parser(prog="%check", add_help=False)
    line.add_argument("name", metavar="NAME")
    line.add_argument("--exercise", action="append", metavar="E")
    _grading_options(line)
    return {"cell": cell, "line": line}


def _say(message: str) -> None:
    print(message, file=sys.stderr)


# ---------------------------------------------------------------- grading

def _relabel(report, path: str, label: str, offset: int, first: int = 1) -> None:
    """Say `label` (`cell In [7]`) where the report would name the temporary file, with the line
    numbers the notebook shows: the imports added above the code shifted them by `offset`, and the
    code starts on line `first` (2 under a `%%check` line)."""
    base = os.path.basename(path)
    pattern = re.compile(rf"(?:[^\s`'\"]*/)?{re.escape(base)}:(\d+)")

    def fix(text):
        return pattern.sub(lambda m: f"{label}:{int(m.group(1)) - offset}", text) if isinstance(text, str) else text

    for row in report.rows:
        for key in ("message", "diagnosis"):
            row[key] = fix(row.get(key))
        row["traceback"] = [(label, line - offset, func, text) if os.path.basename(str(file)) == base
                            else (file, line, func, text) for file, line, func, text in row.get("traceback") or []]
    def line(m):  # a skipped statement's "line N": the code's own line, or one of the imports added
        n = int(m.group(1)) - offset
        return f"line {n}" if n >= first else "an earlier cell's import"

    report.notes = [re.sub(r"\bline (\d+)\b", line, fix(n)) for n in report.notes]
    report.path = label


def plain_python(cell: str) -> str:
    """The cell with its IPython lines (`%time`, `!pip`) blanked, as `check FILE.ipynb` reads a
    notebook: the rest compiles, and line numbers stay the cell's."""
    return "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in cell.splitlines()) + "\n"


def grade_source(code: str, preamble: list[str], label: str, exercises: list[str] | None, args, first: int = 1):
    """Grade `code` (with `preamble` above it) in the sandboxed worker; returns the FileReport whose
    line numbers count from `first` for the code's first line."""
    from triptych.commands.check import _bytes
    from triptych.crosscheck.session import check_file

    if args.timeout <= 0:
        raise InputError(f"--timeout: expected a positive number of seconds, got {args.timeout:g}")
    memory = _bytes(args.memory_limit)
    # The kernel's folder at the end of sys.path: modules beside the notebook import there too.
    preamble = [f"__import__('sys').path.append({os.getcwd()!r})", *preamble]
    head = "".join(line + "\n" for line in preamble)
    with tempfile.TemporaryDirectory(prefix="triptych-cell-") as folder, warnings.catch_warnings():
        # The references' first run imports transformers, whose tqdm warns in a kernel without
        # ipywidgets: a red box under the report about progress bars nobody asked for.
        warnings.filterwarnings("ignore", message="IProgress not found")
        path = os.path.join(folder, CELL_FILE)
        with open(path, "w", encoding="utf-8") as f:
            f.write(head + code)
        report = check_file(path, exercises, framework=args.framework, timeout_s=args.timeout, memory_bytes=memory)
    _relabel(report, path, label, head.count("\n") - (first - 1), first)
    return report


def exercise_named(name: str):
    """catalogue.get, with a short error: the closest names instead of the whole catalogue."""
    import difflib

    from triptych.crosscheck import exercises as catalogue

    try:
        return catalogue.get(name)
    except InputError:
        close = difflib.get_close_matches(name, [ex.name for ex in catalogue.all_exercises()], n=3, cutoff=0.6)
        hint = f"closest: {', '.join(close)}; " if close else ""
        raise InputError(f"no exercise {name!r} ({hint}`%exercise list` names them all)") from None


def _exercises_defining(name: str) -> list[str]:
    from triptych.crosscheck import exercises as catalogue

    return [ex.name for ex in catalogue.all_exercises() if ex.defines == name]


@magics_class
class TriptychMagics(Magics):
    @line_cell_magic
    def check(self, line: str, cell: str | None = None):
        """%%check [EXERCISE ...] [--framework F] [--timeout S] [--memory-limit SIZE] [--pack FILE]: grade
        the cell's definitions in the sandbox, then run the cell here.
        %check NAME [--exercise E] [...]: grade the function or class NAME defined earlier."""
        try:
            if cell is None:
                return self._check_name(line)
            return self._check_cell(line, cell)
        except InputError as exc:
            _say(f"check: {exc}" if not str(exc).startswith(("%check", "%%check")) else str(exc))

    def _label(self) -> str:
        # The running cell is already the last of In[] (IPython stores it before running it), in
        # every IPython version; execution_count is bumped before the run in some, after in others.
        return f"cell In [{len(self.shell.history_manager.input_hist_raw) - 1}]"

    def _check_cell(self, line: str, cell: str) -> None:
        from IPython.display import display

        from triptych.crosscheck.session import select_exercises

        args = _parse(_parsers()["cell"], line)
        names = [exercise_named(name).name for name in args.exercises]  # an unknown name: one line, first
        if not names:
            # The exercises the cell defines, named, so the report does not list the group's other
            # functions as missing: they are in other cells.
            try:
                names = [ex.name for ex in select_exercises(ast.parse(plain_python(cell)), None)]
            except SyntaxError:
                names = None  # check_file reports it, as a row
            if names == []:
                _say("check: this cell defines none of the exercise names (`%exercise list` names them; "
                     "`%check NAME --exercise EXERCISE` grades a function of another name); it ran as a plain cell")
                self.shell.run_cell(cell, store_history=False)
                return
        try:
            code = plain_python(cell)
            report = grade_source(code, history_imports(self.shell) + cell_helpers(self.shell, code), self._label(),
                                  names or None, args, first=2)  # the cell's line 1 is `%%check`
        except InputError as exc:
            _say(f"check: {exc}")
            report = None
        if report is not None:
            display(report)
            if any(sign in note for note in report.notes for sign in _UNSAFE):
                _say("check: the cell was not run in this kernel: loading it hung or crashed the sandbox (see the "
                     "notes above), and would do the same here")
                return
        self.shell.run_cell(cell, store_history=False)

    def _check_name(self, line: str):
        from IPython.display import display

        args = _parse(_parsers()["line"], line)
        name, ns = args.name, self.shell.user_ns
        if name not in ns:
            raise InputError(f"no `{name}` in this notebook: run the cell that defines it first")
        obj = ns[name]
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            raise InputError(f"`{name}` is a {type(obj).__name__}; expected a function or class defined in a cell")
        exs = [exercise_named(e) for e in args.exercise or _exercises_defining(name)]
        if not exs:
            raise InputError(f"`{name}` is no exercise name; say which exercise it answers: %check {name} "
                             f"--exercise EXERCISE (`triptych exercise list` names them)")
        source = definition_source(self.shell, name, obj)
        if source is None:
            raise InputError(f"cannot find the source of `{name}` (neither inspect nor this notebook's history has it)")
        parts = helper_sources(self.shell, source, {name} | {ex.defines for ex in exs}) + [source]
        # An exercise graded under another name (%check my_split --exercise split_heads): alias it.
        parts += [f"{ex.defines} = {name}" for ex in exs if ex.defines != name]
        code = "\n\n".join(parts) + "\n"
        report = grade_source(code, history_imports(self.shell), f"`{name}`", [ex.name for ex in exs], args)
        display(report)

    @line_magic
    def lesson(self, line: str) -> None:
        """%lesson NAME: run a lesson here; its panels and its plot show inline (lessons.run)."""
        from IPython.display import display

        from triptych import lessons
        names = shlex.split(line)
        if len(names) != 1:
            _say(f"lesson: expected one lesson name, e.g. %lesson {next(iter(lessons.LESSONS))} "
                 f"(the lessons: {', '.join(lessons.LESSONS)})")
            return
        try:
            lessons.load_lesson(names[0])
        except InputError as exc:
            _say(str(exc))
            return
        display(lessons.run(names[0]))

    @line_magic
    def exercise(self, line: str) -> None:
        """%exercise show NAME | %exercise new GROUP [--framework F] [--print] | %exercise list; [--pack FILE]"""
        p = _Parser(prog="%exercise", add_help=False)
        p.add_argument("action", choices=["show", "new", "list"])
        p.add_argument("name", nargs="?", metavar="NAME|GROUP")
        p.add_argument("--framework", choices=["numpy", "torch", "jax"], default="numpy")
        p.add_argument("--print", action="store_true", help="print the skeleton instead of adding a cell")
        _pack_option(p)
        try:
            args = _parse(p, line)
            if args.action != "list" and not args.name:
                raise InputError(f"%exercise {args.action}: expected a{' group' if args.action == 'new' else 'n exercise'}"
                                 f" name (`%exercise list` names them)")
            getattr(self, f"_exercise_{args.action}")(args)
        except InputError as exc:
            _say(str(exc) if str(exc).startswith("%exercise") else f"exercise: {exc}")

    def _exercise_show(self, args) -> None:
        from triptych.commands.exercise import run_show

        run_show(argparse.Namespace(name=exercise_named(args.name).name, json=False))

    def _exercise_list(self, args) -> None:
        from triptych.commands.exercise import run_list

        run_list(argparse.Namespace(json=False))

    def _exercise_new(self, args) -> None:
        from triptych.crosscheck.exercises import groups
        from triptych.crosscheck.skeleton import render

        if args.name not in groups():
            raise InputError(f"no group {args.name!r}; the groups: {', '.join(groups())}")
        exs = groups()[args.name][1]
        text = "%%check\n" + render(args.name, groups()[args.name][0], exs, args.framework)
        # Colab ignores the request for a new cell; elsewhere (Jupyter, IPython) it is the next input.
        if args.print or "google.colab" in sys.modules:
            print(text)
            return
        self.shell.set_next_input(text, replace=False)
        print(f"{args.name}: {len(exs)} stubs ({args.framework}) in a new cell below; fill them in and run it. "
              f"No new cell? `%exercise new {args.name} --print` prints them to copy.")
