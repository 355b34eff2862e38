"""`python cli.py bench`: the JSON schema, and that every number is computed from what was measured
(no timing assertions: speed is what the command reports, not what the tests demand)."""
import json
import math
import os
import subprocess
import sys

import pytest

from triptych.benchmarks.attention import attention_flops
from triptych.benchmarks.long_context import long_context_worker, naive_score_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_attention_flops_formula():
    # Q K^T and P V: 2 * T_q * T_k * d multiply-adds each = 4 * T_q * T_k * d FLOPs per head.
    assert attention_flops(2, 3, 5, 7, 11, False, "forward") == 4 * 2 * 3 * 5 * 7 * 11
    assert attention_flops(2, 3, 5, 7, 11, True, "forward") == 2 * 2 * 3 * 5 * 7 * 11
    assert attention_flops(1, 1, 4, 4, 8, False, "backward") == 3 * 4 * 4 * 4 * 8


def test_naive_score_memory_matches_exercise_g2():
    # 48 heads x 16,384^2 scores x 2 bytes = 25.77 GB (exercises.md G.2 (c)).
    assert naive_score_bytes(16384, 48, 2) == 48 * 16384 * 16384 * 2
    assert round(naive_score_bytes(16384, 48, 2) / 1e9, 1) == 25.8


def test_bench_attention_json_rows_are_computed(tmp_path):
    r = _cli("bench", "attention", "--json", "--repeats", "1", "--shape", "1,2,32,8", "--causal", "yes",
             "--peak-size", "256", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    keys = {"shape", "causal", "pass", "backend", "ms", "gflops", "pct_peak", "ratio_to_torch"}
    assert rows and all(set(row) == keys for row in rows)
    saved = json.loads((tmp_path / "attention.json").read_text())
    peak = saved["matmul_peak"]["peak_gflops"]
    backends = {row["backend"] for row in rows}
    assert {"torch SDPA", "numpy readable", "numpy sdpa fast", "numpy fast", "numpy flash", "jax jit", "jax sdpa fast",
            "jax flash", "jax matmuls only (bound)"} <= backends
    assert {(row["causal"], row["pass"]) for row in rows} == {(True, "forward"), (True, "backward")}
    for row in rows:
        assert row["shape"] == [1, 2, 32, 8]
        assert row["ms"] > 0 and math.isfinite(row["ms"])
        flops = attention_flops(1, 2, 32, 32, 8, row["causal"], row["pass"])
        assert row["gflops"] == pytest.approx(flops / (row["ms"] * 1e-3) / 1e9, rel=1e-9)
        assert row["pct_peak"] == pytest.approx(100 * row["gflops"] / peak, rel=1e-9)
        torch_row = next(t for t in rows if t["backend"] == "torch SDPA" and t["pass"] == row["pass"]
                         and t["causal"] == row["causal"])
        assert row["ratio_to_torch"] == pytest.approx(torch_row["ms"] / row["ms"], rel=1e-9)
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["rows"] == rows


def test_jax_matmuls_only_bound_is_the_two_matmuls():
    """The bound row times (Q K^T) V per head with no softmax: check it computes exactly that, over
    several row blocks (600 rows) and an odd number of heads."""
    import jax.numpy as jnp
    import numpy as np

    from triptych.benchmarks.attention import _jax_matmuls_only
    from triptych.common.tolerances import assert_close

    import jax_impl  # noqa: F401  (float64 on)

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 3, 600, 8)) for _ in range(3))  # float64: the 1e-10 row applies
    got = _jax_matmuls_only(False)(*(jnp.asarray(x) for x in (q, k, v)))
    assert_close(got, (q @ np.swapaxes(k, -1, -2)) @ v, np.float64, what="(q k^T) v")


def test_long_context_worker_is_exact_and_measures_memory():
    res = long_context_worker({"backend": "numpy", "tokens": 300, "heads": 2, "head_dim": 8, "causal": True})
    assert res["max_abs_err_vs_direct"] < 1e-5  # the float32 value tolerance
    assert res["peak_rss_bytes"] >= res["rss_after_imports_bytes"] > 0
    assert res["inputs_bytes"] == 3 * 2 * 300 * 8 * 4


def test_bench_long_context_cli_runs_both_backends_in_subprocesses(tmp_path):
    r = _cli("bench", "long-context", "--json", "--tokens", "256", "--heads", "2", "--head-dim", "16",
             "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["backend"] for row in rows] == ["numpy", "jax"]
    for row in rows:
        assert row["naive_scores_fp16_bytes"] == naive_score_bytes(256, 2, 2)
        assert row["max_abs_err_vs_direct"] < 1e-5
        assert row["peak_rss_bytes"] > 0 and row["seconds"] >= 0
    assert json.loads((tmp_path / "long_context.json").read_text()) == rows


def test_bench_rejects_bad_arguments_in_one_line():
    r = _cli("bench", "long-context", "--backends", "numpy,cuda")
    assert r.returncode == 2 and "--backends" in r.stderr and "Traceback" not in r.stderr
    r = _cli("bench", "attention", "--repeats", "0")
    assert r.returncode == 2 and "repeats" in r.stderr and "Traceback" not in r.stderr
