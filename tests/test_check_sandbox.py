"""A user's code is untrusted: whatever it does becomes that case's verdict, never a crash of ours.

Broken submissions are written to temporary files and graded through the sandboxed child, as
`triptych check` runs them. NumPy submissions keep the child cheap to start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from triptych.crosscheck.session import check_file, check_folder

ROOT = Path(__file__).resolve().parents[1]
SUBMISSIONS = Path(__file__).with_name("submissions")

BROKEN = '''
import math, os, sys
import numpy as np

class Evil:
    """Returned instead of an array: unpickling it would run a command; it must never be unpickled."""
    def __reduce__(self):
        return (os.system, ("touch {marker}",))

def pairwise_similarities(Q, K):
    raise ValueError("shapes do not line up")

def attn_scaled(A, n_embd, n_heads):
    while True:
        pass

def attn_softmax(A):
    return A * np.nan

def compute_outputs(A, V):
    V[...] = 0.0
    return A @ V

def make_causal_mask(n_tok):
    return np.tril(np.ones((n_tok, n_tok), dtype=bool), k=-1)  # a real mistake, for contrast

def apply_causal_mask(mask, A):
    sys.exit(3)

def split_heads(x, n_heads):
    return x

def merge_heads(y):
    return Evil()

def split_heads_qkv(Q, K, V, n_heads):
    raise NotImplementedError

def self_attention(Q, K, V, n_heads=1, causal=True):
    return np.ones(2**28)  # 2 GiB of float64, over a 1 GiB limit
'''


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    marker = folder / "PWNED"
    path = folder / "broken.py"
    path.write_text(BROKEN.replace("{marker}", str(marker)))
    report = check_file(str(path), timeout_s=2.0, memory_bytes=1 << 30)
    by_ex = {}
    for r in report.rows:
        by_ex.setdefault(r["exercise"], []).append(r)
    return report, by_ex, marker


@pytest.mark.parametrize("exercise, verdict, words", [
    ("pairwise_similarities", "error", "ValueError: shapes do not line up at broken.py:"),
    ("attn_scaled", "timeout", "no answer within 2 s"),
    ("attn_softmax", "NaN/inf", "NaN"),
    ("compute_outputs", "modified input", "changed its input `V` in place"),
    ("make_causal_mask", "FAIL", "max |err|"),
    ("apply_causal_mask", "sys.exit", "sys.exit(3)"),
    ("split_heads", "wrong shape", "got shape (1, 3, 8), expected (1, 2, 3, 4)"),
    ("merge_heads", "wrong return type", "Evil"),
    ("split_heads_qkv", "not implemented yet", "NotImplementedError"),
    ("self_attention", "memory", "memory"),
])
def test_each_broken_behaviour_gets_its_own_verdict(broken, exercise, verdict, words):
    _, by_ex, _ = broken
    rows = by_ex[exercise]
    assert all(r["verdict"] == verdict and not r["ok"] for r in rows), [(r["verdict"], r["message"]) for r in rows]
    assert words in rows[0]["message"], rows[0]["message"]


def test_traceback_is_trimmed_to_the_users_file(broken):
    _, by_ex, _ = broken
    frames = by_ex["pairwise_similarities"][0]["traceback"]
    assert frames and all(f[0] == "broken.py" for f in frames)
    assert frames[-1][2] == "pairwise_similarities" and "raise ValueError" in frames[-1][3]


def test_a_returned_object_is_never_unpickled(broken):
    _, _, marker = broken
    assert not marker.exists()


def test_patching_numpy_in_the_child_cannot_change_the_verdict(tmp_path):
    path = tmp_path / "cheat.py"
    path.write_text(textwrap.dedent('''
        import numpy as np
        np.allclose = lambda *a, **k: True
        np.abs = lambda x: x * 0
        np.max = lambda *a, **k: 0.0
        np.testing.assert_allclose = lambda *a, **k: None
        def attn_scaled(A, n_embd, n_heads):
            return A
    '''))
    report = check_file(str(path))
    assert not report.ok
    assert {r.get("mistake") for r in report.rows} == {"no_scale"}


def test_os_exit_and_segfault_kill_only_their_case(tmp_path):
    path = tmp_path / "exits.py"
    path.write_text("import os, ctypes, math\nimport numpy as np\ndef merge_heads(y):\n    os._exit(7)\n"
                    "def split_heads(x, n_heads):\n    ctypes.string_at(0)\n"
                    "def attn_scaled(A, n_embd, n_heads):\n    return A / math.sqrt(n_embd / n_heads)\n")
    rows = check_file(str(path)).rows
    by = {r["exercise"]: r for r in rows}
    assert by["merge_heads"]["verdict"] == "crashed" and "exit code 7" in by["merge_heads"]["message"]
    assert by["split_heads"]["verdict"] == "crashed" and "segmentation fault" in by["split_heads"]["message"]
    assert all(r["ok"] for r in rows if r["exercise"] == "attn_scaled")  # the worker restarted after each


def test_notebook_export_with_top_level_junk_skips_only_the_failing_statements(tmp_path):
    source = (SUBMISSIONS / "course_b_numpy.py").read_text()
    cells = ["!pip install numpy\n%matplotlib inline\nimport numpy as np", source,
             "print(self_attention(Q, K, V))  # Q comes from a cell that was deleted", "x = undefined + 1"]
    nb = {"cells": [{"cell_type": "code", "source": c.splitlines(keepends=True)} for c in cells]
          + [{"cell_type": "markdown", "source": ["# notes"]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "homework.ipynb"
    path.write_text(json.dumps(nb))
    report = check_file(str(path))
    assert report.ok, [(r["exercise"], r["message"]) for r in report.rows if not r["ok"]]
    assert report.notes == ["skipped 2 top-level statements that failed: cell 3 `print(self_attention(Q, K, V))  # Q "
                            "comes from a cell tha...` (NameError), cell 4 `x = undefined + 1` (NameError)"]


def test_syntax_error_is_a_verdict(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text("def split_heads(x, n_heads)\n    return x\n")
    report = check_file(str(path))
    assert not report.ok and "does not parse: line 1" in report.rows[0]["message"]


def test_folder_of_submissions(tmp_path):
    (tmp_path / "alice.py").write_text((SUBMISSIONS / "course_b_numpy.py").read_text())
    (tmp_path / "bob.py").write_text("import math\ndef attn_scaled(A, n_embd, n_heads):\n    return A / math.sqrt(n_embd)\n")
    (tmp_path / "carol.py").write_text("print('hello')\n")
    reports = {Path(r.path).name: r for r in check_folder(str(tmp_path))}
    assert reports["alice.py"].ok and not reports["bob.py"].ok and not reports["carol.py"].ok
    assert {r.get("mistake") for r in reports["bob.py"].rows} == {"scale_sqrt_n_embd"}
    assert "defines none of the exercise names" in reports["carol.py"].rows[0]["message"]


def _cli(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=300)


def test_cli_exit_codes_and_json(tmp_path):
    ok = _cli("check", str(SUBMISSIONS / "course_b_numpy.py"), "--exercise", "split_heads", "--json")
    assert ok.returncode == 0, ok.stderr
    rows = json.loads(ok.stdout)
    assert len(rows) == 2 and all(r["ok"] for r in rows)
    assert {"exercise", "case", "ok", "max_abs_err", "tolerance", "diagnosis", "message"} <= set(rows[0])

    bad = tmp_path / "bad.py"
    bad.write_text("import numpy as np\ndef merge_heads(y):\n    B, H, T, D = y.shape\n    return y.reshape(B, T, H * D)\n")
    proc = _cli("check", str(bad))
    assert proc.returncode == 1 and "merge_no_transpose" in proc.stdout and "Traceback" not in proc.stderr
    assert "numpy_impl/multihead.py:" in proc.stdout

    for args, words in ((("check", str(tmp_path / "nope.py")), "no such file"),
                        (("check", str(bad), "--exercise", "not_an_exercise"), "exercise: expected one of"),
                        (("check", str(bad), "--memory-limit", "lots"), "--memory-limit"),
                        (("exercise", "show", "nope"), "exercise: expected one of"),
                        (("exercise", "new", "course-z", "--out", str(tmp_path / "x.py")), "group: expected one of")):
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in proc.stderr


def test_exercise_new_then_check_says_not_implemented(tmp_path):
    out = tmp_path / "mine.py"
    assert _cli("exercise", "new", "course-b", "--framework", "torch", "--out", str(out)).returncode == 0
    assert _cli("exercise", "new", "course-b", "--out", str(out)).returncode == 2  # never overwrites
    proc = _cli("check", str(out), "--json")
    rows = json.loads(proc.stdout)
    assert proc.returncode == 1 and rows and all(r["verdict"] == "not implemented yet" for r in rows)


def test_check_saves_what_the_terminal_showed(tmp_path):
    html, svg = tmp_path / "report.html", tmp_path / "report.svg"
    proc = _cli("check", str(SUBMISSIONS / "course_b_numpy.py"), "--exercise", "merge_heads",
                "--html", str(html), "--svg", str(svg))
    assert proc.returncode == 0, proc.stderr
    assert "merge_heads" in html.read_text() and "merge_heads" in svg.read_text()
