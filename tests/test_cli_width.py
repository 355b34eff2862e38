"""Output that fits the terminal it is in: at 80 columns no line is wider and no number or name is
split; `check` is one line per exercise unless -v; `--json` is JSON alone; third-party progress
bars never reach the terminal; lesson plots draw an exact 0 at 0.

CPU: two `check` runs in subprocesses (a torch child each), one in this process, one model load."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from triptych import cli
ROOT = Path(__file__).resolve().parents[1]
# A token that is a number as we print them: 2.55e+00, 0.0001, 3.3e-10, 12, (1, 3, 8)'s digits.
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]\d+)?")
# split_heads right, merge_heads with the named mistake merge_no_transpose (heads not moved back).
SUBMISSION = '''import numpy as np

def split_heads(x, n_heads):
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)

def merge_heads(y):
    B, H, T, D = y.shape
    return y.reshape(B, T, H * D)
'''
EXERCISES = ("--exercise", "split_heads", "--exercise", "merge_heads")


def _cli(*args, columns=80):
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def _fits(text: str, width: int = 80) -> None:
    # "saved: PATH" is the one line allowed to be longer: a path stays one line that can be copied
    too_wide = [line for line in text.splitlines() if len(line) > width and not re.match(r"[\w ]*saved: \S+$", line)]
    assert not too_wide, too_wide


def _words(text: str) -> set[str]:
    """Every whitespace-separated word, with the table's box characters taken as spaces."""
    return set(re.sub(r"[\u2500-\u257f]", " ", text).split())


def _numbers(text: str) -> set[str]:
    return {w for w in _words(text) if NUMBER.fullmatch(w)}


@pytest.fixture(scope="module")
def submission(tmp_path_factory):
    path = tmp_path_factory.mktemp("width") / "mine.py"
    path.write_text(SUBMISSION)
    return path


@pytest.fixture(scope="module")
def report(submission):
    from triptych.crosscheck.session import check_file

    return check_file(str(submission), exercise_names=["split_heads", "merge_heads"])


def _shown(report, width: int, verbose: bool) -> str:
    from triptych.crosscheck.report import print_file_report

    console = Console(record=True, width=width, file=open(os.devnull, "w"))
    print_file_report(console, report, verbose=verbose)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def test_report_at_80_columns_splits_no_number_or_name(report):
    rows = [r for r in report.rows if r["exercise"] == "merge_heads"]
    assert rows and not any(r["ok"] for r in rows)
    wide, narrow = _shown(report, 220, True), _shown(report, 80, True)
    _fits(narrow)
    # A number cut across two lines would leave pieces that the wide report never printed.
    assert _numbers(narrow) <= _numbers(wide), _numbers(narrow) - _numbers(wide)
    words = _words(narrow)
    for r in rows:  # the error, the named mistake and the verdict are there whole, as --json has them
        assert format(r["max_abs_err"], ".2e") in words and r["mistake"] in words
    # NumPy's and JAX's norms give way first at 80 columns; the wide report has them
    assert "numpy" in _words(wide) and "numpy" not in words and "verdict" in words and "diagnosis" in words


def test_check_is_one_line_per_exercise_and_the_table_of_a_failing_one(submission):
    proc = _cli("check", str(submission), *EXERCISES)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    _fits(out)
    lines = {name: next(line for line in out.splitlines() if f" {name} " in line)
             for name in ("split_heads", "merge_heads")}
    assert re.search(r"\b2/2\b.*\bpass\b", lines["split_heads"])
    assert re.search(r"\b0/2\b.*\bFAIL\b.*\bmerge_no_transpose\b", lines["merge_heads"])
    assert "merge_heads  (numpy)" in out and "split_heads  (numpy)" not in out  # the failing one's table only
    assert "max" in out and "|err|" in out


def test_check_verbose_shows_every_table(submission, capsys, monkeypatch):
    from triptych.common.console import console

    monkeypatch.setattr(console, "width", 80)
    assert cli.main(["check", str(submission), *EXERCISES, "-v"]) == 1
    out = capsys.readouterr().out
    _fits(out)
    assert "merge_heads  (numpy)" in out and "split_heads  (numpy)" in out


def test_check_json_is_json_alone(submission):
    proc = _cli("check", str(submission), *EXERCISES, "--json")
    rows = json.loads(proc.stdout)  # nothing but the one document on stdout
    assert proc.returncode == 1 and {r["exercise"] for r in rows} == {"split_heads", "merge_heads"}


def test_piped_output_is_columns_wide_or_100():
    probe = [sys.executable, "-c", "from triptych.common.console import console; print(console.width)"]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    assert subprocess.run(probe, capture_output=True, text=True, cwd=ROOT, env=env).stdout.strip() == "100"
    env["COLUMNS"] = "80"
    assert subprocess.run(probe, capture_output=True, text=True, cwd=ROOT, env=env).stdout.strip() == "80"


def test_calc_json_is_json_alone():
    proc = _cli("calc", "loss", "--logits", "1,2,3", "--target", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)


def test_top_keys_per_query_are_the_largest_and_fit():
    from triptych.commands._attention_view import top_keys_lines

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20, 20))
    weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    labels = [f"tok{i}" for i in range(20)]
    lines = top_keys_lines(weights, labels, 80)
    assert len(lines) == 20
    _fits("\n".join(lines))
    for q, line in enumerate(lines):
        strongest = int(np.argmax(weights[q]))
        assert line.split("->")[1].split(",")[0].split()[:2] == [str(strongest), f"tok{strongest}"]
        assert f"{weights[q, strongest]:.2f}" in line


def test_model_attention_at_80_columns_and_json_alone(tmp_path):
    """The real model and HF: the terminal view fits 80 columns (no "…" cells); --json is JSON alone;
    our one status line replaces HF's progress bars on stderr."""
    text = "The cat sat on the mat because it was tired and wanted to sleep"
    args = ("model", "attention", "--model", "minilm", text, "--layer", "0", "--head", "0", "--out", str(tmp_path))
    proc = _cli(*args)
    if proc.returncode == 2 and "missing" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    _fits(proc.stdout)
    assert "…" not in proc.stdout and "strongest keys" in proc.stdout
    assert "loading the Hugging Face reference model" in proc.stderr
    assert "Loading weights" not in proc.stderr and "%|" not in proc.stderr and "\r" not in proc.stderr
    proc = _cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert np.allclose(np.sum(out["weights"], axis=-1), 1.0, atol=1e-5)  # rows of probabilities


@pytest.mark.parametrize("lesson", ["subspace", "argmax_attention", "craft_queries"])
def test_lesson_plots_draw_an_exact_zero_at_zero(lesson, monkeypatch):
    import importlib

    from triptych.lessons import _render

    figures = []
    monkeypatch.setattr(_render, "save_figure", lambda fig, path: figures.append(fig))
    module = importlib.import_module(f"triptych.lessons.{lesson}")
    if lesson == "subspace":
        result = {"scale_table": [{"S": 1.0, "error": 0.3, "predicted": 0.3}, {"S": 2.0, "error": 0.0,
                                                                                "predicted": 1e-3}]}
    elif lesson == "argmax_attention":
        result = {"walk": [{"t": 0.0, "loss": 1.0}],
                  "temperature": [{"beta": 1.0, "distance_to_argmax": 0.2, "grad_q_norm": 0.1},
                                  {"beta": 1e3, "distance_to_argmax": 0.0, "grad_q_norm": 0.0}]}
    else:
        result = {"promised": 1e-3, "tasks": [{"task": 1, "scale_table": [{"S": 1.0, "max_error": 0.2},
                                                                         {"S": 9.0, "max_error": 0.0}]}]}
    module.plot(result, "unused.png")
    ax = figures[0].axes[-1] if lesson != "craft_queries" else figures[0].axes[0]
    ys = np.concatenate([np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()])
    assert 0.0 in ys and not np.any((ys > 0) & (ys < 1e-12))  # the zero itself, no stand-in like 1e-17
    assert ax.get_yscale() == "symlog" and np.isfinite(ax.transData.transform((1.0, 0.0))).all()


def test_class_summary_at_80_columns(report):
    from triptych.crosscheck.report import print_folder_summary

    console = Console(record=True, width=80, file=open(os.devnull, "w"))
    print_folder_summary(console, [report, report])
    text = console.export_text()
    _fits(text)
    words = _words(text)
    passed = f"{sum(r['ok'] for r in report.rows)}/{len(report.rows)}"  # split_heads' cases of the two
    assert passed == f"{len(report.rows) // 2}/{len(report.rows)}"
    assert "mine.py" in words and "merge_heads" in words and passed in words  # whole, inside the class folder


def test_hf_progress_bars_are_silenced(capfd):
    """transformers' own switch and the tqdm its GGUF converter calls directly both end up off."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging

    from triptych.common.quiet_loading import loading

    with loading("a test model"):
        assert not logging.is_progress_bar_enabled()
        assert list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")) == [0, 1, 2]
    err = capfd.readouterr().err
    assert err == "loading a test model ...\n"  # our one line, and no bar
