"""triptych.lessons.run(NAME): a lesson as one object a notebook displays. Its HTML carries every line the
terminal shows and the plot inline as a PNG (decoded here and checked as an image), the figure is
drawn without touching matplotlib's backend (a notebook's inline backend stays), and the CLI prints
exactly what the lesson's own render() prints to a console."""
from __future__ import annotations

import base64
import html
import io
import re

import matplotlib
import numpy as np
import pytest
from rich.console import Console

from triptych.common.checks import InputError
from triptych.lessons import load_lesson, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _visible_text(page: str) -> str:
    """What a browser shows of the HTML: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


@pytest.fixture
def other_backend():
    """A backend that is not Agg, as a notebook's inline backend is not: a lesson must leave it."""
    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    yield "svg"
    matplotlib.use(before, force=True)


def test_lesson_html_has_every_terminal_line_and_the_plot_inline(other_backend):
    view = run("subspace")
    assert matplotlib.get_backend() == other_backend  # not switched to Agg behind the notebook's back
    assert view.passed and view.plot_path is None  # out=None: nothing written, the PNG kept in memory

    # The terminal's text, replayed from what the lesson printed, is what the HTML shows, line for line.
    text = view.text()
    page = view._repr_html_()
    shown = _visible_text(page)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert len(lines) > 20 and all(ln in shown for ln in lines)
    # The lesson's own computed numbers are on the page, in the lesson's own formatting.
    assert "E.1 Reading v_a out of (v_a + v_b)/2" in shown
    lesson = load_lesson("subspace")
    ref = Console(record=True, file=io.StringIO(), width=120)
    lesson.render(view.result, ref)
    assert ref.export_text(styles=False) == text
    # Colours survive as inline styles (a verdict-coloured panel is not plain text).
    assert "color: #" in page

    # The plot: one inline PNG whose bytes are the ones the view holds, an image of the figure's size.
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(found) == 1
    png = base64.b64decode(found[0])
    assert png == view.plot_png and png.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    # triptych/lessons/_render.figure: 6 x 4 inches at 120 dpi (tight_layout keeps the canvas size).
    assert image.shape[:2] == (480, 720)
    assert np.ptp(image[..., :3]) > 0.5  # drawn on, not a blank canvas


def test_lesson_saved_plot_and_cli_output_are_the_lessons_own(tmp_path, capsys):
    view = run("argmax-attention", out=tmp_path)
    path = tmp_path / "argmax-attention.png"
    assert view.plot_path == path and path.read_bytes() == view.plot_png
    assert f"plot saved: {path}" in _visible_text(view._repr_html_())
    assert "plot saved" in str(view) and repr(view).startswith("<lesson argmax-attention: passed")

    # The CLI replays the same calls: its output is the lesson's render() on a console of its width.
    from triptych import cli
    from triptych.common.console import console

    code = cli.main(["lesson", "argmax-attention", "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    ref = Console(record=True, file=io.StringIO(), width=console.width)
    load_lesson("argmax-attention").render(view.result, ref)
    assert code == 0
    assert out == ref.export_text(styles=False) + f"plot saved: {tmp_path / 'cli' / 'argmax-attention.png'}\n"


def test_unknown_lesson_is_input_error():
    with pytest.raises(InputError, match="lesson: expected one of"):
        run("no-such-lesson")


@pytest.mark.slow
def test_example_notebook_runs_headless(tmp_path):
    """docs/examples/check_in_a_notebook.ipynb, executed as a student runs it (nbclient, this venv's
    python3 kernel): the first split_heads is named as the reshape-only mistake, the fix passes,
    %check grades merge_heads from an earlier cell, and %lesson (lessons.run) shows the lesson's panels
    and its plot inline."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    nb = nbformat.read(root / "docs" / "examples" / "check_in_a_notebook.ipynb", as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")  # shipped without outputs
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(root)}}).execute()

    def shown(first_line: str, nth: int = 0) -> str:
        cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(first_line)]
        outs = cells[nth].outputs
        assert not [o for o in outs if o.output_type == "error"], outs
        return "\n".join(_visible_text(o.data.get("text/html", "")) + o.data.get("text/plain", "")
                         if "data" in o else o.get("text", "") for o in outs)

    assert "split_reshape_only" in shown("%%check split_heads", 0)
    assert "0/2 cases pass" in shown("%%check split_heads", 0)
    assert "2/2 cases pass" in shown("%%check split_heads", 1)
    assert "2/2 cases pass" in shown("%check merge_heads")
    assert "split_no_transpose" in shown("%exercise show split_heads")
    lesson = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%lesson ")][0]
    (page,) = [o.data["text/html"] for o in lesson.outputs if "text/html" in o.get("data", {})]
    assert "E.1 Reading v_a out of (v_a + v_b)/2" in _visible_text(page)
    (png,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(png).startswith(PNG_SIGNATURE)
