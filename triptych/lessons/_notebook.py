"""A lesson as one object that a notebook displays and a terminal prints (`lessons.run(NAME)`).

A lesson's render(result, console) prints rich panels and tables to a console. Here it prints to a
console that keeps each call instead of writing it, so the same calls can be replayed: to the
terminal (`python cli.py lesson NAME` goes through here too), as text for print(), and as HTML for
Jupyter and Colab (rich's export_html with inline styles), where the lesson's plot, when it has one,
is embedded as a PNG below the panels. The figure is made without pyplot (triptych/lessons/_render.figure),
so running a lesson never switches the notebook's matplotlib backend.
"""
from __future__ import annotations

import base64
import html
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

# Columns the HTML is laid out in: the widest lesson tables fit (a Jupyter output cell shows about
# 120 monospace columns before it scrolls sideways).
HTML_WIDTH = 120
# Colours and font as rich's own Jupyter output uses them, the background the theme's own, so the
# panels read the same on a light or a dark notebook.
_PRE = ("<pre style=\"white-space:pre;overflow-x:auto;line-height:normal;color:{foreground};"
        "background-color:{background};font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',"
        "monospace;padding:0.5em\"><code style=\"font-family:inherit\">{code}</code></pre>")


class _Keeper(Console):
    """A console whose print() keeps its arguments; everything else (width, options) is a console's."""

    def __init__(self) -> None:
        super().__init__(file=io.StringIO(), width=HTML_WIDTH)
        self.calls: list[tuple[tuple, dict]] = []

    def print(self, *objects, **kwargs) -> None:
        self.calls.append((objects, kwargs))


@dataclass
class LessonView:
    """What one lesson run printed, its computed numbers and its plot.

    result      the lesson's compute() dict (the numbers `lesson NAME --json` prints come from it)
    passed      False when a number disagrees with its reference (the CLI exits 1 then)
    plot_path   where the PNG was saved, or None (no plot, or run(..., out=None): kept in memory)
    plot_png    the PNG's bytes, or None when the lesson has no plot
    """
    name: str
    result: dict = field(repr=False)
    passed: bool
    calls: list = field(repr=False, default_factory=list)
    plot_path: Path | None = None
    plot_png: bytes | None = field(repr=False, default=None)

    def print_to(self, console: Console) -> None:
        """Replay the lesson's output on `console`, call for call, as the lesson printed it."""
        for objects, kwargs in self.calls:
            console.print(*objects, **kwargs)
        if self.plot_path is not None:
            console.print(f"plot saved: {self.plot_path}", soft_wrap=True, markup=False)

    def __rich_console__(self, console, options):
        for objects, kwargs in self.calls:
            for obj in objects:
                if isinstance(obj, str):  # console.print reads a plain string as markup
                    obj = console.render_str(obj, markup=kwargs.get("markup"), highlight=kwargs.get("highlight"))
                yield obj
        if self.plot_path is not None:
            yield f"plot saved: {self.plot_path}"

    def _recorded(self, width: int = HTML_WIDTH) -> Console:
        rec = Console(record=True, file=io.StringIO(), width=width, color_system="truecolor",
                      force_terminal=True, force_jupyter=False)
        self.print_to(rec)
        return rec

    def text(self, width: int = HTML_WIDTH) -> str:
        """The lesson as plain text (no colours), as print() shows it."""
        return self._recorded(width).export_text(styles=False)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:  # the numbers are in .result; a repr names the run
        plot = (f", plot {self.plot_path}" if self.plot_path else ", plot inline") if self.plot_png else ""
        return f"<lesson {self.name}: {'passed' if self.passed else 'FAILED'}, {len(self.calls)} parts{plot}>"

    def _repr_html_(self) -> str:
        """Jupyter's and Colab's rich display: the panels as coloured HTML, then the plot inline."""
        page = self._recorded().export_html(inline_styles=True, code_format=_PRE)
        if self.plot_png is not None:
            data = base64.b64encode(self.plot_png).decode("ascii")
            alt = html.escape(f"{self.name}: the lesson's plot")
            page += f'<img alt="{alt}" src="data:image/png;base64,{data}" style="max-width:100%"/>'
        return page


def run(name: str, out: str | Path | None = None) -> LessonView:
    """Compute lesson `name`, keep what it prints and draw its plot.

    out: a folder to save the plot in as NAME.png (the CLI passes runs/lessons); None keeps the
    PNG in memory only (a notebook shows it inline and writes nothing)."""
    from triptych.lessons import load_lesson

    lesson = load_lesson(name)
    result = lesson.compute()
    keeper = _Keeper()
    lesson.render(result, keeper)
    view = LessonView(name, result, bool(lesson.passed(result)), keeper.calls)
    if hasattr(lesson, "plot"):  # curves (error vs scale, ...) read better as a picture
        if out is None:
            with tempfile.TemporaryDirectory(prefix="triptych-lesson-") as tmp:
                path = Path(tmp) / f"{name}.png"
                lesson.plot(result, path)
                view.plot_png = path.read_bytes()
        else:
            view.plot_path = Path(out) / f"{name}.png"
            lesson.plot(result, view.plot_path)
            view.plot_png = view.plot_path.read_bytes()
    return view
