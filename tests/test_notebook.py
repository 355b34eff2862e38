"""The checker in a notebook: reports render as the terminal's table (HTML with the verdicts
coloured), and `%load_ext triptych`'s magics grade cells in the sandboxed worker.

One real notebook runs headless with nbclient in this venv's `python3` kernel (ipykernel installs
its kernelspec into the venv): a buggy cell (the named mistake in its HTML), a correct one, a
function that loops forever (a timeout verdict; the kernel answers the next cell), `%check NAME`
on a function of an earlier cell, misuse as one line. One kernel for all of it: each start costs
seconds and each check starts a sandboxed child.
"""
from __future__ import annotations

import html
import re
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

from triptych.crosscheck import check

ROOT = Path(__file__).resolve().parents[1]
GREEN, RED = "color: #008000", "color: #800000"  # rich's `green` and `red` in its default HTML theme

CORRECT = '''
def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)
'''
# The classic slip: a reshape straight to (B, H, T, D), tokens mixed into heads.
BUGGY = '''
def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, n_heads, T, C // n_heads)
'''
ENDLESS = '''
def merge_heads(y):
    while True:
        pass
'''
# merge_heads written with a helper and a constant from the notebook's cells: %check brings them along.
MERGE_HELPER = '''
AXES = (0, 2, 1, 3)

def heads_last(y):
    return y.transpose(AXES)
'''
MERGE = '''
def my_merge(y):
    B, H, T, D = y.shape
    return np.ascontiguousarray(heads_last(y)).reshape(B, T, H * D)
'''


def _visible(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _span_text(page: str, colour: str) -> list[str]:
    """The texts rich coloured `colour` in an exported HTML fragment."""
    return [html.unescape(t) for t in re.findall(rf'<span style="{colour}[^"]*">([^<]*)</span>', page)]


def test_report_renders_as_the_terminal_table_in_html_and_text():
    def split_heads(x, n_heads):
        B, T, C = x.shape
        return x.reshape(B, n_heads, T, C // n_heads)  # the reshape-only mistake

    report = check("split_heads", split_heads, framework="numpy")
    assert not report.ok and report.mistakes == {"split_reshape_only"}
    page = report._repr_html_()
    assert page.startswith("<pre") and "<html" not in page  # a fragment for an output cell, not a document
    shown = _visible(page)
    for r in report.rows:  # every case on its own row, its verdict coloured red, the mistake named
        assert r["case"].split(",")[0] in shown
    assert _span_text(page, RED).count("FAIL") == len(report.rows)
    assert "split_reshape_only" in shown and "numpy_impl/multihead.py" in shown
    text = str(report)
    assert "split_reshape_only" in text and "FAIL" in text and "<span" not in text and "\x1b[" not in text
    assert [ln.strip() for ln in text.splitlines() if ln.strip()] == [
        ln.strip() for ln in shown.splitlines() if ln.strip()]  # print() shows what the notebook shows
    assert repr(report) == "<Report split_heads (numpy): 0/2 cases pass, FAIL>"

    good = check("split_heads", lambda x, n_heads: x.reshape(*x.shape[:2], n_heads, -1).transpose(0, 2, 1, 3),
                 framework="numpy")
    assert good.ok and _span_text(good._repr_html_(), GREEN).count("pass") == len(good.rows)


def _notebook(cells: list[str]):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src.strip("\n")) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _outputs(cell) -> tuple[str, str, str]:
    """(the HTML displayed, the text/plain and stdout, stderr) of one executed cell."""
    page, text, err = [], [], []
    for out in cell.outputs:
        if out.output_type == "stream":
            (err if out.name == "stderr" else text).append(out.text)
        elif out.output_type in ("display_data", "execute_result"):
            page.append(out.data.get("text/html", ""))
            text.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            err.append(f"{out.ename}: {out.evalue}")
    return "\n".join(page), "\n".join(text), "\n".join(err)


def _seconds(cell) -> float:
    from datetime import datetime

    ex = cell.metadata["execution"]
    start, end = (datetime.fromisoformat(ex[k].replace("Z", "+00:00"))
                  for k in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


@pytest.mark.slow
def test_magics_in_a_real_notebook(tmp_path):
    cells = [
        "%load_ext triptych\nimport numpy as np",                                   # 0
        "%%check\n" + BUGGY,                                                         # 1
        "%%check split_heads\n" + CORRECT,                                           # 2
        "print(split_heads(np.zeros((1, 3, 8)), 2).shape)",                          # 3: the kernel has it
        "%%check --timeout 3\n" + ENDLESS,                                           # 4
        "print('still here', 6 * 7)",                                                # 5
        MERGE_HELPER,                                                                # 6
        MERGE,                                                                       # 7
        "%check my_merge --exercise merge_heads",                                    # 8
        "%check nothing_here",                                                       # 9
        "%exercise show split_heads\n%exercise show splitheads",                     # 10
        "%%check\nanswer = 41",                                                      # 11
        "print(answer + 1)\n%lesson subspace",                                       # 12
        "%%check\ndef merge_heads(y):\n    raise ValueError('boom')",                  # 13
        "%%check merge_heads\n" + MERGE.replace("my_merge", "merge_heads"),           # 14: helpers of cell 6
    ]
    nb = _notebook(cells)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    started = time.monotonic()
    client.execute()
    wall = time.monotonic() - started
    out = [_outputs(c) for c in nb.cells]

    page, _, err = out[1]  # buggy: the named mistake on its row, FAIL in red, the sentence under it
    assert "split_reshape_only" in _visible(page) and _span_text(page, RED).count("FAIL") == 2, (page, err)
    assert "WITHOUT the transpose" in _visible(page) and "cell In [2]" in _visible(page)
    page, _, err = out[2]  # correct: every case passes, in green
    assert _span_text(page, GREEN).count("pass") == 2 and "FAIL" not in page, (page, err)
    assert "2/2 cases pass" in _visible(page) and "not defined either" not in _visible(page)
    assert out[3][1].strip() == "(1, 2, 3, 4)"  # the cell ran in the kernel after its check
    page, _, err = out[4]  # the endless loop: a verdict, not a hung kernel
    assert _visible(page).count("timeout") >= 2 and "no answer within 3 s" in _visible(page), (page, err)
    assert out[5][1].strip() == "still here 42"
    page, _, err = out[8]  # %check NAME: its source, its helper and constant, graded under the exercise's name
    assert _span_text(page, GREEN).count("pass") == 2 and "`my_merge`" in _visible(page), (page, err)
    assert out[9][2].strip() == "check: no `nothing_here` in this notebook: run the cell that defines it first"
    _, text, err = out[10]
    assert "split_reshape_only" in (text + _visible(out[10][0])) and "Traceback" not in err
    assert err.strip().startswith("exercise: no exercise 'splitheads' (closest: split_heads")  # one line
    assert len(err.strip().splitlines()) == 1
    assert out[11][2].strip().startswith("check: this cell defines none of the exercise names")
    assert out[12][1].startswith("42") and 'src="data:image/png;base64,' in out[12][0]  # the lesson's plot inline
    # The error's place as the notebook numbers it: the cell's line 3 (line 1 is `%%check`), not the
    # temporary file's, whose first lines are the imports of earlier cells.
    assert "ValueError: boom at cell In [14]:3 in merge_heads" in _visible(out[13][0]), out[13]
    # %%check brings the earlier cells' helper and constant (heads_last, AXES), not cell 13's merge_heads
    page, _, err = out[14]
    assert _span_text(page, GREEN).count("pass") == 2 and "FAIL" not in page, (page, err)
    print(f"\nnotebook: {wall:.1f} s in all; %%check cells: buggy {_seconds(nb.cells[1]):.1f} s, "
          f"correct {_seconds(nb.cells[2]):.1f} s, endless loop {_seconds(nb.cells[4]):.1f} s, "
          f"%check {_seconds(nb.cells[8]):.1f} s")
