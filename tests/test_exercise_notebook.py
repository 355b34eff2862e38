"""`exercise new GROUP --out NAME.ipynb`: a real Jupyter notebook (nbformat 4) whose cells each start
with `%%check NAME`, and which `triptych check NAME.ipynb` grades as it grades any notebook: a stub
is "not implemented yet", a cell filled in correctly passes, a planted mistake is named."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from triptych.crosscheck import exercises
from triptych.crosscheck.sandbox.loader import read_source
from triptych.crosscheck.skeleton import render, render_notebook

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def _fill(nb: dict, name: str, body: str) -> None:
    """Replace the stub under `%%check name` with `body`, keeping the magic line, as a student does."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and cell["source"][0] == f"%%check {name}\n":
            cell["source"] = [cell["source"][0]] + [line + "\n" for line in body.strip("\n").split("\n")]
            return
    raise AssertionError(f"no %%check {name} cell")


@pytest.mark.parametrize("framework", ["numpy", "torch", "jax"])
def test_every_group_is_a_valid_notebook_with_one_check_cell_per_exercise(tmp_path, framework):
    for group, (title, exs) in exercises.groups().items():
        nb = json.loads(render_notebook(group, title, exs, framework))
        assert (nb["nbformat"], nb["nbformat_minor"]) == (4, 5)
        assert nb["metadata"]["kernelspec"]["name"] == "python3"
        ids = [c["id"] for c in nb["cells"]]
        assert len(set(ids)) == len(ids)  # nbformat 4.5 requires unique cell ids
        for cell in nb["cells"]:
            assert set(cell) >= {"cell_type", "id", "metadata", "source"}
            assert all(line.endswith("\n") for line in cell["source"][:-1])
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code[0]["source"][-1] == "%load_ext triptych"
        # A cell per exercise, the cell magic on its first line naming exercises `check` knows, each once.
        assert all(c["source"][0].startswith("%%check ") for c in code[1:])
        names = [n for c in code[1:] for n in c["source"][0].split()[1:]]
        assert sorted(exercises.get(n).name for n in names) == sorted(ex.name for ex in exs)
        for c in code[1:]:  # each cell defines what its %%check line names (a function or a value)
            for n in c["source"][0].split()[1:]:
                defines = exercises.get(n).defines
                assert any(line.startswith((f"def {defines}(", f"class {defines}", f"{defines} = "))
                           for line in c["source"]), (n, c["source"])
        if group == "course-b":  # apply_causal_mask is graded with the student's own make_causal_mask
            assert "%%check make_causal_mask apply_causal_mask\n" in [c["source"][0] for c in code]
        # What `check FILE.ipynb` reads of it (IPython lines blanked) is Python, and defines each exercise.
        path = tmp_path / f"{group}.ipynb"
        path.write_text(json.dumps(nb))
        source, cells = read_source(str(path))
        compile(source, str(path), "exec")
        assert len(cells) == len(code)


def test_python_skeleton_is_unchanged_by_the_notebook_form():
    title, exs = exercises.groups()["course-b"]
    text = render("course-b", title, exs, "numpy")
    assert "%%check" not in text and "%load_ext" not in text
    compile(text, "course_b.py", "exec")


def test_notebook_is_graded_by_check(tmp_path):
    out = tmp_path / "mine.ipynb"
    made = _cli("exercise", "new", "course-b", "--out", str(out))
    assert made.returncode == 0, made.stderr
    nb = json.loads(out.read_text())
    # Written here for this test: the head split as (B, T, H, D) then heads before time ...
    _fill(nb, "split_heads", """
def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)
""")
    # ... and a merge that forgets to move the heads back behind time (the named merge_no_transpose).
    _fill(nb, "merge_heads", """
def merge_heads(y):
    B, H, T, D = y.shape
    return y.reshape(B, T, H * D)
""")
    out.write_text(json.dumps(nb, indent=1))
    proc = _cli("check", str(out), "--json", "--exercise", "split_heads", "--exercise", "merge_heads",
                "--exercise", "pairwise_similarities")
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    by = {}
    for r in rows:
        by.setdefault(r["exercise"], []).append(r)
    assert set(by) == {"split_heads", "merge_heads", "pairwise_similarities"}
    assert all(r["ok"] and r["verdict"] == "pass" for r in by["split_heads"])
    assert all(not r["ok"] and r["diagnosis"] and "merge_no_transpose" in json.dumps(r) for r in by["merge_heads"])
    assert all(r["verdict"] == "not implemented yet" for r in by["pairwise_similarities"])


def test_out_that_is_a_folder_is_refused_in_one_line(tmp_path):
    for extra in ([], ["--force"]):
        for target in (str(tmp_path), str(tmp_path / "new_folder") + "/"):
            proc = _cli("exercise", "new", "course-b", "--out", target, *extra)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1 and "--out" in lines[0], (target, proc.stderr)
            assert "Traceback" not in proc.stderr
    assert not (tmp_path / "new_folder").exists()
    assert os.listdir(tmp_path) == []


def test_example_notebook_is_graded_by_check():
    """docs/examples/check_in_a_notebook.ipynb read as `check` reads any notebook: the magic lines are
    blanked, the last split_heads (the fixed one) and merge_heads pass, and nothing else is graded."""
    from triptych.crosscheck.session import check_file

    report = check_file(str(ROOT / "docs" / "examples" / "check_in_a_notebook.ipynb"))
    assert {r["exercise"] for r in report.rows} == {"split_heads", "merge_heads"}
    assert report.ok and all(r["verdict"] == "pass" for r in report.rows)
    assert not [n for n in report.notes if "skipped" in n]  # every statement the notebook has loads
