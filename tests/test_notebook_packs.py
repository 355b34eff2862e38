"""A teacher's exercise pack in the notebook magics (`%exercise ... --pack`, `%%check --pack`), in an
in-process IPython shell: the pack joins the catalogue, a student's cell is graded against it with
its mistake named, a cell run twice with the same --pack loads it again without a clash, and a bad
pack is one line. The pack is docs/examples/local_attention_pack.py (tests/test_exercise_packs.py
proves its references against hand-written loops)."""
from __future__ import annotations

from pathlib import Path

import pytest

PACK = str(Path(__file__).resolve().parents[1] / "docs" / "examples" / "local_attention_pack.py")

# ALiBi's slopes as 2^(-8k/n) for every n: right for 8 heads (a power of two), wrong for 12, where the
# paper interleaves the slopes of 8 and 16 heads.
NAIVE_SLOPES = '''
def alibi_slopes(n_heads):
    start = 2.0 ** (-8.0 / n_heads)
    return np.array([start ** (i + 1) for i in range(n_heads)])
'''


@pytest.fixture(scope="module")
def shell():
    """One in-process shell for the module; the catalogue is left as it was found (a pack stays for
    the process's later checks, as in a kernel, and other test files count the built-in groups)."""
    from IPython.core.interactiveshell import InteractiveShell

    from triptych.crosscheck import exercises

    before = list(exercises._requested)
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "triptych")
    sh.run_cell("import numpy as np", store_history=True)
    yield sh
    exercises._requested[:] = before


def test_exercise_list_takes_a_pack(shell, capsys, monkeypatch):
    from triptych.common.console import console

    monkeypatch.setattr(console, "width", 200)  # no name folded over two rows of the table
    shell.run_line_magic("exercise", f"list --pack {PACK}")
    out = capsys.readouterr().out
    assert "local-attention" in out and "sliding_window_attention" in out


def test_check_cell_grades_against_the_pack_twice(shell, capsys):
    for _ in range(2):  # the same cell run again: the pack is loaded again, not refused as a clash
        shell.run_cell(f"%%check alibi_slopes --pack {PACK}\n{NAIVE_SLOPES}", store_history=True)
        out, err = capsys.readouterr()
        assert "already a group" not in err and "Traceback" not in out + err
        assert "1/2 cases pass" in out.replace("\n", " ")
        assert "not a power of two" in out  # the named mistake's description, under the failing case
    assert shell.user_ns["alibi_slopes"](8).shape == (8,)  # the cell then ran in the kernel


def test_a_missing_pack_is_one_line(shell, capsys, tmp_path):
    shell.run_cell(f"%%check --pack {tmp_path / 'nope.py'}\n{NAIVE_SLOPES}", store_history=True)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert len([line for line in err.splitlines() if line.strip()]) == 1 and "pack" in err
