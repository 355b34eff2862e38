"""`check DIR --report class.html`: one page for a teacher about the whole class.

Per exercise: how many students pass it, a bar chart of the named mistakes (how many students made
each), the conventions the passes used (a mask's polarity, AdamW's order: the `convention` field of
a pass with a note); then a table of every student's verdicts, each name linking to that student's
own report, written beside the page as <page>_files/<student>.html from the same rich renderables
the terminal and the notebook show (crosscheck/report.py). Everything is inline (CSS, SVG charts):
the page opens from a mail attachment or a USB stick with no network.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from html import escape

from triptych.common.io import atomic_write_text
from triptych.crosscheck.classroom.outcome import graded, problems, rows_by_exercise, student_name

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.pass { background: #e6f4ea; color: #1e6b34; } td.note { background: #eef6e0; color: #3b6b1e; }
td.fail { background: #fdecea; color: #a01c1c; } td.none { color: #999; }
.chart text { font-size: 12px; fill: #222; } .muted { color: #777; }
"""
_MISTAKE_COLOUR, _RATE_COLOUR = "#d9534f", "#3c8d5a"


def bar_chart(items: list[tuple[str, int]], total: int, colour: str, unit: str = "students") -> str:
    """A horizontal bar chart as inline SVG: one bar per (label, count), scaled to `total`."""
    if not items:
        return ""
    # The labels' column as wide as the longest (about 7 px a character at 12 px), within reason.
    label_w = min(330, 12 + 7 * max(len(label) for label, _ in items))
    bar_w, row_h = 420, 24
    height = row_h * len(items) + 8
    parts = [f'<svg class="chart" role="img" width="{label_w + bar_w + 110}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for i, (label, n) in enumerate(items):
        y = 4 + i * row_h
        w = 0 if not total else round(bar_w * n / total)
        shown = label if len(label) <= 48 else label[:47] + "\u2026"
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end"><title>{escape(label)}</title>'
                     f'{escape(shown)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 8}" fill="{colour}"/>')
        what = unit if n != 1 else unit.removesuffix("s")
        parts.append(f'<text x="{label_w + w + 6}" y="{y + 16}">{n} {escape(what)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def exercise_state(rows: list[dict]) -> tuple[str, str]:
    """(css class, short text) of one student's exercise: pass, pass with a note, or the failure."""
    counted = [r for r in rows if graded(r)]
    if not counted:
        return "none", "not graded"
    passed = sum(bool(r["ok"]) for r in counted)
    if passed == len(counted):
        notes = sorted({r.get("convention") or r.get("precision") or "note" for r in counted if r.get("note")})
        return ("note", "pass* " + ", ".join(notes)) if notes else ("pass", "pass")
    bad = [r for r in counted if not r["ok"]]
    named = next((r["mistake"] for r in bad if r.get("mistake")), None)
    return "fail", f"{passed}/{len(counted)} {named or bad[0]['verdict']}"


def _file_names(reports: list) -> list[str]:
    """A file name per student page: the student's name made safe, unique within the class."""
    used, names = set(), []
    for rep in reports:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", student_name(rep.path)).strip("._") or "student"
        name, k = base, 1
        while name.lower() in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name.lower())
        names.append(name + ".html")
    return names


def _page(title: str, body: str, wide: bool = False) -> str:
    # A student's page holds the terminal's 130-column tables: as wide as they are, not the class page's column.
    style = _STYLE + ("body { max-width: none; }" if wide else "")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def _exercise_sections(exercises: list[str], per_student: list[dict[str, list[dict]]]) -> list[str]:
    """A section per exercise that has something to say; one line names those every student who
    answers them passes with no convention to note."""
    sections, clean = [], []
    for name in exercises:
        tried = [s[name] for s in per_student if name in s]
        if all(exercise_state(rows)[0] == "pass" for rows in tried):
            clean.append(name)
        else:
            sections.append(_exercise_section(name, per_student))
    if clean:
        names = ", ".join(f"<code>{escape(n)}</code>" for n in clean)
        sections.insert(0, f"<p>Every student who answers them passes, the reference's way: {names}.</p>")
    return sections


def _exercise_section(name: str, per_student: list[dict[str, list[dict]]]) -> str:
    """An exercise's heading, pass rate, mistakes chart and conventions."""
    tried = [s[name] for s in per_student if name in s]
    passing = sum(exercise_state(rows)[0] in ("pass", "note") for rows in tried)
    mistakes: Counter = Counter()
    conventions: Counter = Counter()
    for rows in tried:
        bad = [r for r in rows if graded(r) and not r["ok"]]
        named = {r["mistake"] for r in bad if r.get("mistake")}
        # A whole failing through a part it uses (grade.order_failures) is charted as that part.
        named |= {f"through {', '.join(r['fix_first'])}" for r in bad if r.get("fix_first") and not r.get("mistake")}
        mistakes.update(named or ({"(failing, no named mistake)"} if bad else set()))
        conventions.update({r["convention"] for r in rows if r["ok"] and r.get("convention")})
    rate = f"{passing}/{len(tried)} students pass ({100 * passing / len(tried):.0f}%)" if tried else "no student answers it"
    out = [f'<h2 id="ex-{escape(name)}">{escape(name)}</h2>', f"<p>{rate}</p>"]
    if mistakes:
        out.append("<h3>Mistakes</h3>" + bar_chart(sorted(mistakes.items(), key=lambda kv: (-kv[1], kv[0])),
                                                    len(tried), _MISTAKE_COLOUR))
    if conventions:
        seen = ", ".join(f"<code>{escape(c)}</code> ({n})" for c, n in sorted(conventions.items()))
        out.append(f"<p>Conventions seen among the passes: {seen}</p>")
    return "\n".join(out)


def _students_table(reports: list, per_student: list[dict], exercises: list[str], links: list[str]) -> str:
    head = "".join(f"<th>{escape(e)}</th>" for e in exercises)
    lines = [f"<div style=\"overflow-x:auto\"><table><thead><tr><th>student</th><th>framework</th><th>cases passed</th>{head}</tr></thead><tbody>"]
    for rep, found, link in zip(reports, per_student, links):
        counted = [r for r in rep.rows if graded(r)]
        passed = sum(bool(r["ok"]) for r in counted)
        cells = []
        for e in exercises:
            css, text = exercise_state(found[e]) if e in found else ("none", "-")
            cells.append(f'<td class="{css}">{escape(text)}</td>')
        name = escape(student_name(rep.path))
        lines.append(f'<tr><td><a href="{escape(link)}">{name}</a></td><td>{escape(rep.framework)}</td>'
                     f"<td>{passed}/{len(counted)}</td>{''.join(cells)}</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def class_page(reports: list, title: str, links: list[str]) -> str:
    """The class page's HTML; links[i] is the relative address of reports[i]'s own page."""
    per_student = [rows_by_exercise([rep]) for rep in reports]
    exercises = list(dict.fromkeys(name for found in per_student for name in found))
    n_ok = sum(rep.ok for rep in reports)
    rates = [(e, sum(exercise_state(f[e])[0] in ("pass", "note") for f in per_student if e in f)) for e in exercises]
    body = [f"<h1>{escape(title)}</h1>",
            f"<p>{len(reports)} submissions; {n_ok} pass every case. Each case is compared with NumPy, JAX and "
            f"torch (<code>triptych check</code>); a name links to that student's report.</p>",
            "<h2>Students passing each exercise</h2>",
            bar_chart(rates, len(reports), _RATE_COLOUR),
            *_exercise_sections(exercises, per_student),
            "<h2>Students</h2>", _students_table(reports, per_student, exercises, links)]
    stuck = [(student_name(rep.path), problems([rep])) for rep in reports if not rep.rows or not any(
        r.get("exercise") for r in rep.rows)]
    if stuck:
        body.append("<h2>Submissions that answer no exercise</h2><ul>" + "".join(
            f"<li>{escape(n)}: {escape('; '.join(p))}</li>" for n, p in stuck) + "</ul>")
    return _page(title, "\n".join(body))


def student_page(report, back: str) -> str:
    """One student's report: what `triptych check FILE -v` prints, as HTML, and a link back."""
    from triptych.crosscheck.report import NOTEBOOK_WIDTH, file_report_renderables, renderables_html

    fragment = renderables_html(file_report_renderables(report, NOTEBOOK_WIDTH, verbose=True))
    name = student_name(report.path)
    return _page(f"{name}: triptych check", f'<p><a href="{escape(back)}">&larr; the class</a></p>'
                                            f"<h1>{escape(name)}</h1>\n{fragment}", wide=True)


def write_class_report(reports: list, path: str, title: str | None = None) -> list[str]:
    """Write the class page at `path` and each student's page in <path without .html>_files/.
    Returns the paths written, the class page first."""
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.join(os.path.dirname(os.path.abspath(path)), f"{stem}_files")
    os.makedirs(folder, exist_ok=True)
    names = _file_names(reports)
    links = [f"{stem}_files/{n}" for n in names]
    written = [path]
    atomic_write_text(path, class_page(reports, title or "Class report", links))
    for rep, name in zip(reports, names):
        target = os.path.join(folder, name)
        atomic_write_text(target, student_page(rep, f"../{os.path.basename(path)}"))
        written.append(target)
    return written
