"""How a check looks: one rich table per exercise (the user's numbers beside NumPy's, JAX's and
torch's), the diagnosis under it, and the JSON rows for autograders."""
from __future__ import annotations

import io
import os

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from triptych.crosscheck.session import FileReport

JSON_KEYS = ("exercise", "group", "case", "dtype", "ok", "verdict", "max_abs_err", "tolerance", "course_tol",
             "note", "convention", "precision", "diagnosis", "mistake", "explanation", "fix_at", "fix_first",
             "message", "shape", "expected_shape", "l2", "l2_ref", "traceback")


def _num(x, fmt=".2e") -> str:
    return "-" if x is None else format(x, fmt)


def _verdict(row) -> str:
    """pass; pass* (green) when it passes with a note (a convention, a precision, the course's
    tolerance); "not graded" dim (a case the user's signature cannot take); failures in red."""
    if row.get("verdict") == "not graded":
        return "[dim]not graded[/]"
    if row["ok"]:
        return "[green]pass*[/]" if row.get("note") else "[green]pass[/]"
    return f"[bold red]{escape(row['verdict'])}[/]"


def json_rows(report: FileReport, with_file: bool = False) -> list[dict]:
    rows = []
    for r in report.rows:
        out = {k: r.get(k) for k in JSON_KEYS}
        if with_file:
            out = {"file": report.path, "framework": report.framework, **out}
        rows.append(out)
    return rows


# Which columns of a case table give way when the terminal is narrow, first to last: NumPy's and JAX's
# norms (they agree with torch's, or parity would have failed; --json keeps them), then the norms
# left, the tolerances, the shapes and the error. The case, the verdict and the diagnosis always stay.
DROP_ORDER = ("L2 numpy", "L2 jax", "L2 yours", "L2 torch", "tol ours / course", "shape yours / expected",
              "max |err|")
# Preferred widest a column grows to when there is room (a long case name or mistake then wraps at
# its spaces instead of widening the table past a screen); None: as wide as its longest cell.
_CAP = {"case": 30, "shape yours / expected": 26, "verdict": 14, "diagnosis": 24}
_BORDER = 3  # rich's default box: one space each side of a cell and one vertical line per column


def _longest_word(text: str) -> int:
    return max((len(word) for word in text.split()), default=0)


def _longest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def fit_columns(headers: list[str], cells: list[list[str]], width: int, drop_order=(),
                caps: dict | None = None) -> dict[str, int]:
    """The columns that fit in `width` and each one's width, so that no word or number is split.

    cells are markup strings, one list per row. A column is never narrower than its longest word
    (rich then wraps its cells at spaces only); columns in drop_order go, first to last, until the
    narrowest table fits; what room is left widens columns towards their longest line, left to right
    but the first last.
    Returns {header: width} in the headers' order (a table wider than `width` only when even the
    columns that always stay cannot fit)."""
    caps = caps or {}
    plain = [[Text.from_markup(c).plain for c in row] for row in cells]
    least, most = {}, {}
    for i, h in enumerate(headers):
        column = [row[i] for row in plain]
        least[h] = max([_longest_word(h)] + [_longest_word(c) for c in column])
        natural = max([_longest_line(h)] + [_longest_line(c) for c in column])
        most[h] = max(least[h], min(natural, caps.get(h, natural)))
    kept = list(headers)
    for h in drop_order:
        if sum(least[k] for k in kept) + _BORDER * len(kept) + 1 <= width:
            break
        if h in kept:
            kept.remove(h)
    widths = {h: least[h] for h in kept}
    room = width - sum(widths.values()) - _BORDER * len(kept) - 1
    for h in kept[1:] + kept[:1]:  # the first column (a case's name) wraps best at its spaces: it grows last
        grow = max(0, min(room, most[h] - widths[h]))
        widths[h] += grow
        room -= grow
    return widths


def fitted_table(title: str | None, columns: list[tuple[str, str]], cells: list[list[str]], width: int,
                 drop_order=(), caps: dict | None = None) -> Table:
    """A rich Table of the columns fit_columns keeps, each at its fixed width (so rich never folds a
    word); columns are (header, justify)."""
    headers = [h for h, _ in columns]
    widths = fit_columns(headers, cells, width, drop_order, caps)
    table = Table(title=title, title_justify="left")
    keep = [i for i, h in enumerate(headers) if h in widths]
    for i in keep:
        header, justify = columns[i]
        table.add_column(header, justify=justify, width=widths[header], overflow="fold")
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    return table


def _case_cells(r: dict) -> list[str]:
    shape = "-" if r.get("shape") is None else (
        r["shape"] if r["shape"] == r.get("expected_shape") else f"{r['shape']} / {r.get('expected_shape')}")
    if r.get("shape") is None and r.get("expected_shape"):
        shape = f"- / {r['expected_shape']}"
    l2_ref = r.get("l2_ref") or {}
    tol = _num(r.get("tolerance"), ".1e") + " / " + _num(r.get("course_tol"), "g")
    short = (r.get("mistake") or r.get("convention") or r.get("precision")
             or ("see below" if r.get("diagnosis") or r.get("note") else ""))
    return [escape(r["case"] or ""), escape(shape), _num(r.get("l2"), ".6g"),
            *(_num(l2_ref.get(b), ".6g") for b in ("numpy", "jax", "torch")),
            _num(r.get("max_abs_err")), tol, _verdict(r), f"[yellow]{escape(short)}[/]"]


def exercise_table(name: str, rows: list[dict], framework: str, width: int = 200) -> Table:
    """One row per case, fitted to `width` columns (fit_columns: no number or word is ever split;
    columns give way in DROP_ORDER). The diagnosis column names the mistake briefly; the sentence,
    the reason and the line of numpy_impl that does it right follow under the table."""
    columns = [("case", "left"), ("shape yours / expected", "left"), ("L2 yours", "right"),
               ("L2 numpy", "right"), ("L2 jax", "right"), ("L2 torch", "right"), ("max |err|", "right"),
               ("tol ours / course", "right"), ("verdict", "left"), ("diagnosis", "left")]
    return fitted_table(f"{escape(name)}  ({framework})", columns, [_case_cells(r) for r in rows], width,
                        DROP_ORDER, _CAP)


def exercise_line(rows: list[dict]) -> list[str]:
    """One exercise in a line's cells: cases passed, the verdict, the named mistake or note."""
    passed, noted, ungraded, graded = counts(rows)
    bad = [r for r in rows if not r["ok"]]
    if bad:
        verdicts = [r["verdict"] for r in bad]
        verdict = f"[bold red]{escape(max(set(verdicts), key=verdicts.count))}[/]"
        named = next((r["mistake"] for r in bad if r.get("mistake")), None)
        short = named or ("see the cases below" if any(r.get("diagnosis") or r.get("message") for r in bad) else "")
    elif graded == 0:
        verdict, short = "[dim]not graded[/]", next((r.get("message") for r in rows if r.get("message")), "") or ""
    else:
        verdict = "[green]pass*[/]" if noted else "[green]pass[/]"
        names = sorted({r.get("convention") or r.get("precision") or "" for r in rows if r.get("note")} - {""})
        short = ", ".join(names) or ("note (-v shows it)" if noted else "")
    return [f"{passed}/{graded}", verdict, f"[yellow]{escape(short)}[/]"]


def details(rows: list[dict]) -> list[str]:
    """The lines under a table: per failing case, what happened and where to look."""
    lines, seen = [], set()
    for r in rows:
        if r["ok"] and r.get("note"):  # once per distinct note, marked as the verdict column marks it
            key = ("note", r["note"])
            if key not in seen:
                seen.add(key)
                lines.append(f"  [green]* {escape(r['case'])}[/]: {escape(r['note'])}")
            continue
        if r.get("verdict") == "not graded":
            key = ("not graded", r.get("message"))
            if key not in seen:
                seen.add(key)
                lines.append(f"  [dim]{escape(r['case'] or '')}: {escape(r.get('message') or 'not graded')}[/]")
            continue
        if r["ok"] and r.get("message"):
            key = ("note", r["message"])
            if key not in seen:
                seen.add(key)
                lines.append(f"  [green]{escape(r['case'])}[/]: {escape(r['message'])}")
            continue
        if r["ok"]:
            continue
        key = (r["verdict"], r.get("mistake") or r.get("diagnosis") or r.get("message"))
        if key in seen:
            continue
        seen.add(key)
        lines.append(f"  [bold red]{escape(r['case'] or r['verdict'])}[/]: {escape(r.get('message') or '')}")
        if r.get("diagnosis"):
            lines.append(f"    [yellow]{escape(r['diagnosis'])}[/]")
        if r.get("explanation"):
            lines.append(f"    why: {escape(r['explanation'])}")
        if r.get("fix_at"):
            lines.append(f"    the right way: {escape(r['fix_at'])}")
        for file, line, func, text in r.get("traceback") or []:
            lines.append(f"    [dim]{escape(str(file))}:{line} in {escape(str(func))}: {escape(str(text))}[/]")
    return lines


def print_file_report(console, report: FileReport, verbose: bool = False) -> None:
    """The terminal's report: compact (one line per exercise, the case table only for an exercise
    with a failing case) or, verbose, every exercise's table."""
    for item in file_report_renderables(report, console.width, verbose=verbose):
        console.print(item)


def file_report_renderables(report: FileReport, width: int, verbose: bool = True) -> list:
    """What print_file_report prints, as rich renderables: the notes, one table per exercise with
    its lines under it, the footer. The terminal, the notebook (HTML) and str() all show these.

    verbose=False: one line per exercise first (cases passed, verdict, the named mistake or note),
    the notes of the passes with a note, then the table and lines of each exercise that has a
    failing case only."""
    items: list = [Text.from_markup(f"[yellow]note:[/] {escape(note)}") for note in report.notes]
    by_exercise: dict[str, list[dict]] = {}
    for r in report.rows:
        by_exercise.setdefault(r["exercise"] or "?", []).append(r)
    shown = by_exercise
    if not verbose:
        cells = [[escape(name), *exercise_line(rows)] for name, rows in by_exercise.items()]
        columns = [("exercise", "left"), ("cases", "right"), ("verdict", "left"), ("mistake or note", "left")]
        items.append(fitted_table(None, columns, cells, width))  # the footer names the file
        shown = {name: rows for name, rows in by_exercise.items() if not all(r["ok"] for r in rows)}
        for name, rows in by_exercise.items():  # a pass with a note: the note, which says what was accepted
            notes = [] if name in shown else list(dict.fromkeys(r["note"] for r in rows if r.get("note")))
            items.extend(Text.from_markup(f"  [green]* {escape(name)}[/]: {escape(note)}") for note in notes)
    for name, rows in shown.items():
        items.append(exercise_table(name, rows, report.framework, width))
        items.extend(Text.from_markup(line) for line in details(rows))
    items.append(Text.from_markup(footer(report) + ("" if verbose else " [dim]-v: every case[/]")))
    return items


def counts(rows: list[dict]) -> tuple[int, int, int, int]:
    """(passed, passed with a note, not graded, graded): "not graded" rows are neither."""
    ungraded = sum(r.get("verdict") == "not graded" for r in rows)
    passed = sum(bool(r["ok"]) and r.get("verdict") != "not graded" for r in rows)
    noted = sum(bool(r["ok"]) and bool(r.get("note")) and r.get("verdict") != "not graded" for r in rows)
    return passed, noted, ungraded, len(rows) - ungraded


def footer(report: FileReport) -> str:
    """'N/G cases pass (M with a note), K not graded' and what the comparison is."""
    return summary_line(report.path, report.rows, report.ok)


def summary_line(label: str, rows: list[dict], ok: bool) -> str:
    """The footer for any rows: a file's path, or an exercise's name for the in-process check()."""
    passed, noted, ungraded, graded = counts(rows)
    colour = "green" if ok else "red"
    extra = "".join((f" ({noted} with a note)" if noted else "", f", {ungraded} not graded" if ungraded else ""))
    return (f"[{colour}]{escape(label)}: {passed}/{graded} cases pass{extra}[/] "
            "(|yours - reference| <= each row's tolerance, triptych/common/tolerances.py; `exercise show NAME` "
            "says what the reference is)")


def print_folder_summary(console, reports: list[FileReport]) -> None:
    columns = [("file", "left"), ("framework", "left"), ("cases passed", "right"), ("failing exercises", "left"),
               ("first diagnosis or message", "left")]
    # Each file by its path inside the class folder (the folder is the title): a student's name is
    # then the first thing in its row and rarely too long for one line of an 80-column terminal.
    paths = [os.path.abspath(rep.path) for rep in reports]
    common = os.path.commonpath(paths) if paths else ""
    if len(paths) == 1 or common in paths:
        common = os.path.dirname(common)
    cells = []
    for rep, path in zip(reports, paths):
        bad = [r for r in rep.rows if not r["ok"]]
        failing = sorted({r["exercise"] for r in bad if r["exercise"]})
        first = next((r.get("diagnosis") for r in bad if r.get("diagnosis")), None) or (bad[0]["message"] if bad else "")
        passed, _, _, graded = counts(rep.rows)
        cells.append([escape(os.path.relpath(path, common) if common else rep.path), rep.framework, f"{passed}/{graded}", escape(", ".join(failing)),
                      escape(first or "")])
    title = f"Submissions in {escape(common)}" if common else "Submissions"
    console.print(fitted_table(title, columns, cells, console.width, ("framework",)))
    n_ok = sum(rep.ok for rep in reports)
    console.print(f"{n_ok}/{len(reports)} submissions pass every case")


# ---------------------------------------------------------------- the same report in a notebook or a string

# A notebook's output area scrolls sideways (the <pre> below says so) but a student reads the first
# screen: 130 columns hold the eight columns exercise_table keeps below 140 with a mistake's name
# (up to its 24-column cap) unfolded; NumPy's and JAX's norms, which agree with torch's, are in --json.
NOTEBOOK_WIDTH = 130
# rich's Jupyter output is a <pre> of inline-styled spans; the same, so the table looks the same there.
_PRE = ('<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
        "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>")


def _recorded(renderables: list, width: int) -> Console:
    # A StringIO is no terminal, so nothing is drawn; the record keeps the segments and their styles.
    # force_jupyter=False: in a kernel rich would otherwise display every print as an output of its own.
    console = Console(file=io.StringIO(), record=True, width=width, highlight=False, force_jupyter=False)
    for item in renderables:
        console.print(item)
    return console


def renderables_html(renderables: list, width: int = NOTEBOOK_WIDTH) -> str:
    """An HTML fragment (for `_repr_html_`): the text the terminal shows, its colours inline."""
    return _recorded(renderables, width).export_html(inline_styles=True, code_format=_PRE)


def renderables_text(renderables: list, width: int = NOTEBOOK_WIDTH) -> str:
    """Plain text of the same (for `str()` and `print()`), without colour codes."""
    text = _recorded(renderables, width).export_text()
    return "\n".join(line.rstrip() for line in text.splitlines())  # rich pads each line to the width


def rows_renderables(label: str, exercise: str, framework: str, rows: list[dict], ok: bool,
                     width: int = NOTEBOOK_WIDTH) -> list:
    """One exercise's table, its lines and its footer: the in-process check()'s report."""
    return [exercise_table(exercise, rows, framework, width), *(Text.from_markup(line) for line in details(rows)),
            Text.from_markup(summary_line(label, rows, ok))]


def short_repr(kind: str, label: str, framework: str, rows: list[dict], ok: bool) -> str:
    """`<Report split_heads (numpy): 1/2 cases pass, FAIL>`: a repr of one line, not the rows."""
    passed, _, _, graded = counts(rows)
    state = "pass" if ok else "FAIL"
    return f"<{kind} {label} ({framework}): {passed}/{graded} cases pass, {state}>"
