"""--html FILE / --svg FILE on tour, parity and lesson: the saved page shows what the terminal showed.

The commands run in this process (cli.main), so JAX compiles once for the whole file; common.console's
recording is what is under test, and test_cli_core.py runs the same commands as subprocesses."""
from __future__ import annotations

import html
import json
import re

import pytest

from triptych import cli
def shown(path) -> str:
    """The text a reader sees in a saved HTML or SVG report (style sheets and tags dropped, entities decoded)."""
    text = re.sub(r"<style.*?</style>", "", path.read_text(encoding="utf-8"), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\xa0", " ")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(autouse=True)
def no_recording_left_over():
    from triptych.common.console import console

    yield
    assert not console.recording  # every run stops its recording, so the next one starts clean


def test_tour_html_and_svg_show_the_tables(tmp_path, capsys):
    page, picture = tmp_path / "tour.html", tmp_path / "tour.svg"
    code, out, err = run(capsys, "tour", "--dtype", "float32", "--html", str(page), "--svg", str(picture))
    assert code == 0
    assert "split_heads" in out and "cli.py check my_mha.py" in out
    for report in (page, picture):
        text = shown(report)
        assert "split_heads" in text and "get_multihead_qkv" in text
        assert str(report) in err  # "saved: PATH", on stderr
    assert "20/20 steps agree with torch" in shown(page) and "my_mha.py" in shown(page)
    assert picture.read_text().lstrip().startswith("<svg")


def test_tour_json_with_html_keeps_stdout_json_and_saves_it(tmp_path, capsys):
    page = tmp_path / "tour.html"
    code, out, err = run(capsys, "tour", "--json", "--html", str(page))
    assert code == 0
    rows = json.loads(out)  # the "saved:" line went to stderr, so stdout is still pure JSON
    assert rows[0]["op"] == "get_multihead_qkv -> q"
    assert json.loads(shown(page).strip()) == rows  # the page shows exactly the JSON that was printed


def test_parity_html_and_svg_show_every_op(tmp_path, capsys):
    page, picture = tmp_path / "parity.html", tmp_path / "parity.svg"
    code, out, _ = run(capsys, "parity", "--dtype", "float32", "--html", str(page), "--svg", str(picture))
    assert code == 0
    ops = re.findall(r"^│ (\w+)", out, flags=re.M)  # the op column of the terminal's table
    assert "pairwise_similarities" in ops and len(ops) > 5
    for report in (page, picture):
        text = shown(report)
        assert all(op in text for op in ops)
    assert "Parity vs torch, float32" in shown(page)
    assert "rows within |a - ref| <= atol + rtol*|ref|" in shown(page)


def test_lesson_html_shows_the_lesson_and_its_plot_line(tmp_path, capsys):
    page, picture = tmp_path / "lesson.html", tmp_path / "lesson.svg"
    code, out, _ = run(capsys, "lesson", "craft-queries", "--out", str(tmp_path / "plots"),
                       "--html", str(page), "--svg", str(picture))
    assert code == 0 and "Crafting queries" in out
    assert "Crafting queries" in shown(page) and "plot saved:" in shown(page)
    assert "k_0" in shown(picture)


def test_lesson_list_json_with_svg(tmp_path, capsys):
    picture = tmp_path / "sub" / "triptych.lessons.svg"  # a missing folder is created
    code, out, _ = run(capsys, "lesson", "list", "--json", "--svg", str(picture))
    assert code == 0
    names = [row["name"] for row in json.loads(out)]
    assert all(name in shown(picture) for name in names)


def test_without_flags_nothing_is_recorded_or_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "lesson", "list")
    assert code == 0 and "craft-queries" in out and "saved:" not in err
    assert list(tmp_path.iterdir()) == []
