"""The core CLI as a user runs it: real subprocesses, real exit codes, no tracebacks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=300):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def test_tour_runs_and_every_step_agrees_with_torch():
    r = cli("tour", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) >= 20 and all(row["ok"] for row in rows)
    q = next(row for row in rows if row["op"] == "get_multihead_qkv -> q")
    assert q["shape"] == "(1, 2, 3, 4)"  # exercise A.1's expected shape
    w = next(row for row in rows if row["op"] == "attention weights")
    assert w["shape"] == "(1, 2, 3, 3)"
    # The three L2 norms are the same number, independently computed.
    assert max(q["l2"].values()) - min(q["l2"].values()) < 1e-12


def test_tour_table_is_human_readable():
    r = cli("tour", "--dtype", "float32", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "A. Multi-head attention from parts" in r.stdout and "20/20 steps agree with torch" in r.stdout
    assert "lesson list" in r.stdout


def test_parity_json_schema_and_all_rows_pass():
    r = cli("parity", "--dtype", "float32", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert {"op", "shape", "l2", "max_abs_err", "tol", "ok"} <= set(rows[0])
    assert set(rows[0]["l2"]) == {"numpy", "jax", "torch"}
    assert all(row["ok"] for row in rows)
    assert all(np.isfinite(row["max_abs_err"]) for row in rows)


@pytest.mark.parametrize("args, fragment", [
    (("parity", "--dtype", "float16"), "invalid choice: 'float16'"),
    (("nonsense",), "invalid choice: 'nonsense'"),
    (("tour", "--seed", "abc"), "argument --seed: expected a non-negative integer, got 'abc'"),
])
def test_cli_misuse_is_one_line_and_exit_2(args, fragment):
    r = cli(*args)
    assert r.returncode == 2
    assert fragment in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
