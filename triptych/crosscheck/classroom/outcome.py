"""A check's rows as the outside world reads them: per exercise, and one case's verdict in words
(Gradescope's test output, a JUnit failure, the class page)."""
from __future__ import annotations

import os


def student_name(path: str) -> str:
    """A submission's name in a class: its file or folder name without .py / .ipynb."""
    base = os.path.basename(os.path.normpath(path))
    for ext in (".py", ".ipynb"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def rows_by_exercise(reports) -> dict[str, list[dict]]:
    """{exercise: its rows} over one student's reports (a submission folder of several files), an
    exercise from the first report that grades it; rows without an exercise (a file that answers
    none) are left out: problems() has them."""
    found: dict[str, list[dict]] = {}
    for rep in reports:
        mine: dict[str, list[dict]] = {}
        for r in rep.rows:
            if r.get("exercise"):
                mine.setdefault(r["exercise"], []).append(r)
        for name, rows in mine.items():
            found.setdefault(name, rows)
    return found


def problems(reports) -> list[str]:
    """The notes of the reports and the messages of rows that belong to no exercise."""
    out = []
    for rep in reports:
        out.extend(rep.notes)
        out.extend(r["message"] for r in rep.rows if not r.get("exercise") and r.get("message"))
    return list(dict.fromkeys(out))


def graded(row: dict) -> bool:
    """A case that counts: "not graded" (the user's signature cannot take the case) does not."""
    return row.get("verdict") != "not graded"


def failure_text(row: dict) -> str:
    """What went wrong in one failing case, in a few lines: the message, the named mistake and why,
    the line of numpy_impl that does it right."""
    lines = [row.get("message") or row.get("verdict") or "failed"]
    if row.get("diagnosis"):
        lines.append(f"mistake: {row['diagnosis']}")
    if row.get("explanation"):
        lines.append(f"why: {row['explanation']}")
    if row.get("fix_at"):
        lines.append(f"the right way: {row['fix_at']}")
    return "\n".join(lines)


def case_line(row: dict) -> str:
    """'pass  <case>', 'pass* <case>: <note>', 'FAIL  <case>: <what went wrong>' (indented lines)."""
    if not graded(row):
        return f"not graded  {row['case']}: {row.get('message') or ''}".rstrip(": ")
    if row["ok"]:
        note = row.get("note")
        return f"pass* {row['case']}: {note}" if note else f"pass  {row['case']}"
    text = failure_text(row).replace("\n", "\n      ")
    return f"{row['verdict']}  {row['case']}: {text}"
