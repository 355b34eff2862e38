"""Small rendering helpers shared by the lessons: numbers, vectors and matrices as rich tables.

Only formatting lives here; every number is computed in the lesson's compute()."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def num(x, digits: int = 4) -> str:
    """A scalar with `digits` decimals, or scientific notation when it is tiny or huge."""
    x = float(x)
    if x == 0.0:
        return "0"
    if abs(x) < 10 ** (-digits) or abs(x) >= 1e6:
        return f"{x:.{max(digits - 2, 1)}e}"
    return f"{x:.{digits}f}"


def err(x) -> str:
    """An error or difference: always scientific, so 1e-16 and 1e-3 read alike."""
    return f"{float(x):.1e}"


def vec(v, digits: int = 4) -> str:
    """[a, b, c] with aligned signs."""
    v = np.asarray(v, dtype=float).reshape(-1)
    return "[" + ", ".join(f"{x: .{digits}f}" for x in v) + "]"


def matrix(m, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
           digits: int = 4, title: str | None = None) -> Table:
    """A 2-D array as a table, one row per matrix row."""
    m = np.atleast_2d(np.asarray(m, dtype=float))
    t = Table(title=title, show_header=col_labels is not None, box=None, pad_edge=False)
    t.add_column("", style="bold")
    for j in range(m.shape[1]):
        t.add_column(col_labels[j] if col_labels else "", justify="right")
    for i in range(m.shape[0]):
        label = row_labels[i] if row_labels else ""
        t.add_row(Text(label), *(f"{x: .{digits}f}" for x in m[i]))
    return t


def table(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None,
          justify: Sequence[str] | None = None) -> Table:
    """A table of plain-text cells: str() of each, never read as markup (a token such as [unused5]
    would otherwise vanish as an unknown style tag). Pass a rich Text for a styled cell."""
    t = Table(title=title, show_lines=False)
    for j, c in enumerate(columns):
        t.add_column(c, justify=(justify[j] if justify else ("left" if j == 0 else "right")))
    for r in rows:
        t.add_row(*(c if isinstance(c, Text) else Text(str(c)) for c in r))
    return t


def note(text: str, style: str = "italic") -> Text:
    return Text(text, style=style)


def code(line: str) -> Text:
    return Text(line, style="cyan")


def panel(title: str, *parts) -> Panel:
    """A titled panel. The title is rich markup; string parts are plain text (brackets in vectors
    such as [1, 2] would otherwise be read as markup)."""
    items = [Text(p) if isinstance(p, str) else p for p in parts]
    return Panel(Group(*items), title=f"[bold]{title}[/]", title_align="left")


def figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    """A matplotlib Figure and its (1, ncols) axes, made without pyplot: no backend is chosen or
    switched, so a lesson run in a notebook leaves the notebook's own backend (inline, widget) as
    it was, and no display is needed anywhere. The PNG is drawn by Agg when it is saved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height))
    return fig, fig.subplots(1, ncols, squeeze=False)


def log_axis_keeping_zero(ax, values, axis: str = "y") -> None:
    """A logarithmic axis on which an exact 0 is drawn at 0 (labelled "0"), not clipped to a tiny
    number that would pass for a measured error: matplotlib's symlog, linear only below a tenth of the
    smallest nonzero |value| (so every nonzero value sits on the log part, as on a log axis)."""
    nonzero = [abs(float(v)) for v in values if v]
    linthresh = min(nonzero) / 10 if nonzero else 1.0
    setter = ax.set_yscale if axis == "y" else ax.set_xscale
    setter("symlog", linthresh=linthresh, linscale=0.3)


def save_figure(fig, path) -> None:
    """Write the PNG atomically (triptych/common/io.py). The figure belongs to no pyplot state, so there is
    nothing to close: it is freed with its last reference."""
    from triptych.common.io import atomic_save

    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
