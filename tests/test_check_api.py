"""The Python API a user's own pytest file calls (README: "Check your own code")."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from triptych.crosscheck import assert_matches, check

ROOT = Path(__file__).resolve().parents[1]


def test_the_users_pytest_example_runs_green():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
                           str(ROOT / "docs/examples/test_my_attention.py")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_framework_is_guessed_from_the_functions_module():
    def merge_heads(y):
        B, H, T, D = y.shape
        return y.transpose(1, 2).reshape(B, T, H * D)

    report = assert_matches("merge_heads", merge_heads)
    assert report.framework == "torch" and torch.is_tensor(torch.zeros(1))


def test_exceptions_in_process_become_verdicts():
    def split_heads(x, n_heads):
        raise RuntimeError("boom")

    report = check("split_heads", split_heads, framework="numpy")
    assert not report.ok and {r["verdict"] for r in report.rows} == {"error"}
    assert "RuntimeError: boom" in report.rows[0]["message"]
    with pytest.raises(AssertionError, match="RuntimeError: boom"):
        assert_matches("split_heads", split_heads, framework="numpy")


def test_unknown_exercise_and_framework_are_named():
    from triptych.common.checks import InputError

    with pytest.raises(InputError, match="exercise: expected one of"):
        check("no_such_exercise", np.zeros)
    with pytest.raises(InputError, match="framework: expected one of numpy, torch, jax, got 'tf'"):
        check("split_heads", np.zeros, framework="tf")
