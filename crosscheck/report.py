"""How a check looks: one rich table per exercise (the user's numbers beside NumPy's, JAX's and
torch's), the diagnosis under it, and the JSON rows for autograders."""
from __future__ import annotations

import io

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from crosscheck.session import FileReport

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


def exercise_table(name: str, rows: list[dict], framework: str, width: int = 200) -> Table:
    """One row per case. The diagnosis column names the mistake briefly; the sentence, the reason
    and the line of numpy_impl that does it right follow under the table.

    Below 140 columns (an 80-column terminal, CI's log) ten columns would fold every cell into
    slivers: the three reference norms shrink to torch's alone (NumPy's and JAX's are in --json and
    in a wider terminal; a backend that disagreed with torch would be a bug of ours, caught by parity)."""
    narrow = width < 140
    table = Table(title=f"{name}  ({framework})", title_justify="left")
    columns = [("case", "left", 30), ("shape yours / expected", "left", 26), ("L2 yours", "right", None)]
    columns += [("L2 torch", "right", None)] if narrow else [
        ("L2 numpy", "right", None), ("L2 jax", "right", None), ("L2 torch", "right", None)]
    columns += [("max |err|", "right", None), ("tol ours / course", "right", None), ("verdict", "left", 14),
                ("diagnosis", "left", 24)]
    for col, justify, col_width in columns:
        table.add_column(col, justify=justify, max_width=col_width, overflow="fold")
    refs = ("torch",) if narrow else ("numpy", "jax", "torch")
    for r in rows:
        shape = "-" if r.get("shape") is None else (
            r["shape"] if r["shape"] == r.get("expected_shape") else f"{r['shape']} / {r.get('expected_shape')}")
        if r.get("shape") is None and r.get("expected_shape"):
            shape = f"- / {r['expected_shape']}"
        l2_ref = r.get("l2_ref") or {}
        tol = _num(r.get("tolerance"), ".1e") + " / " + _num(r.get("course_tol"), "g")
        short = (r.get("mistake") or r.get("convention") or r.get("precision")
                 or ("see below" if r.get("diagnosis") or r.get("note") else ""))
        table.add_row(escape(r["case"] or ""), escape(shape), _num(r.get("l2"), ".6g"),
                      *(_num(l2_ref.get(b), ".6g") for b in refs),
                      _num(r.get("max_abs_err")), tol, _verdict(r), f"[yellow]{escape(short)}[/]")
    return table


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


def print_file_report(console, report: FileReport) -> None:
    for item in file_report_renderables(report, console.width):
        console.print(item)


def file_report_renderables(report: FileReport, width: int) -> list:
    """What print_file_report prints, as rich renderables: the notes, one table per exercise with
    its lines under it, the footer. The terminal, the notebook (HTML) and str() all show these."""
    items: list = [Text.from_markup(f"[yellow]note:[/] {escape(note)}") for note in report.notes]
    by_exercise: dict[str, list[dict]] = {}
    for r in report.rows:
        by_exercise.setdefault(r["exercise"] or "?", []).append(r)
    for name, rows in by_exercise.items():
        items.append(exercise_table(name, rows, report.framework, width))
        items.extend(Text.from_markup(line) for line in details(rows))
    items.append(Text.from_markup(footer(report)))
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
            "(|yours - reference| <= each row's tolerance, common/tolerances.py; `exercise show NAME` "
            "says what the reference is)")


def print_folder_summary(console, reports: list[FileReport]) -> None:
    table = Table(title="Submissions", title_justify="left")
    for col, justify in (("file", "left"), ("framework", "left"), ("cases passed", "right"),
                         ("failing exercises", "left"), ("first diagnosis or message", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for rep in reports:
        bad = [r for r in rep.rows if not r["ok"]]
        failing = sorted({r["exercise"] for r in bad if r["exercise"]})
        first = next((r.get("diagnosis") for r in bad if r.get("diagnosis")), None) or (bad[0]["message"] if bad else "")
        passed, _, _, graded = counts(rep.rows)
        table.add_row(escape(rep.path), rep.framework, f"{passed}/{graded}",
                      escape(", ".join(failing)), escape(first or ""))
    console.print(table)
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
