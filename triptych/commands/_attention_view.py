"""How `model attention` shows one head's probabilities in the terminal: a table when the terminal
is wide enough for every shown key's column, else each query's strongest keys, one line each (the
PNG heatmap beside it always has every cell)."""
from __future__ import annotations

__all__ = ["attention_table", "table_fits", "top_keys_lines"]


def attention_table(ours, labels: list[str], shown: list[int | None], title: str, causal: bool):
    """The probabilities as a table, query tokens down, key tokens across ("…": positions left out)."""
    from rich.table import Table

    T = len(labels)
    if T > len(shown):
        title += f"; {sum(p is not None for p in shown)} of {T} tokens shown"
    table = Table(title=title)
    table.add_column("query \\ key", no_wrap=True)
    for p in shown:
        table.add_column("…" if p is None else f"{p} {labels[p].strip()}", justify="right", max_width=9, overflow="ellipsis")
    for q in shown:
        if q is None:
            table.add_row("…", *["…"] * len(shown))
            continue
        cells = []
        for k in shown:
            if k is None:
                cells.append("…")
            elif causal and k > q:
                cells.append("[dim]·[/dim]")  # masked: exactly 0
            else:
                v = ours[q, k]
                cells.append(f"[bold]{v:.2f}[/bold]" if v >= 0.5 else f"{v:.2f}")
        table.add_row(f"{q} {labels[q].strip()}", *cells)
    return table


def table_fits(console, table) -> bool:
    """Whether the table's columns get their full width on this console (rich would otherwise squeeze
    every key's column down to "…")."""
    from rich.measure import Measurement

    unbounded = console.options.update_width(10_000)  # measured without the terminal's limit
    return Measurement.get(console, unbounded, table).maximum <= console.width


def top_keys_lines(weights, labels: list[str], width: int, most: int = 4) -> list[str]:
    """One line per query: `q label -> k label 0.62, k label 0.21, ...`, its strongest keys first,
    as many (up to `most`) as fit in `width` columns, whole (a key is never cut)."""
    import numpy as np

    names = [f"{i} {t.strip() or repr(t)}" for i, t in enumerate(labels)]
    pad = max(len(n) for n in names)
    lines = []
    for q, row in enumerate(np.asarray(weights)):
        line = f"{names[q]:<{pad}} ->"
        for n, k in enumerate(np.argsort(-row, kind="stable")[:most]):
            piece = ("" if n == 0 else ",") + f" {names[k]} {row[k]:.2f}"
            if n and len(line) + len(piece) > width:
                break
            line += piece
        lines.append(line)
    return lines
