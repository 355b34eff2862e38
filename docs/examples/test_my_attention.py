"""A user's own pytest file: keep Triptych's checks in your course repo's or porting project's CI.

    pip install /path/to/triptych        # or: pip install -e /path/to/triptych
    pytest test_my_attention.py

Each assert_matches runs every case of the exercise (the course's own setting, larger shapes,
float32 and float64) against NumPy, JAX and torch, and on a failure raises an AssertionError that
names the mistake ("your output matches ... WITHOUT the 1/sqrt(d) scale").
"""
import math

import numpy as np
import pytest

from triptych.crosscheck import assert_matches, check


def split_heads(x, n_heads):  # your code: (B, T, C) -> (B, n_heads, T, C // n_heads)
    B, T, C = x.shape
    return x.reshape(B, T, n_heads, C // n_heads).transpose(0, 2, 1, 3)


def attn_scaled(A, n_embd, n_heads):
    return A / math.sqrt(n_embd / n_heads)


def buggy_attn_scaled(A, n_embd, n_heads):
    return A / math.sqrt(n_embd)  # the classic: the whole embedding instead of the head size


def test_split_heads():
    assert_matches("split_heads", split_heads)


def test_attn_scaled():
    assert_matches("attn_scaled", attn_scaled)


def test_a_bug_is_named():
    with pytest.raises(AssertionError, match="sqrt\\(n_embd\\) instead of sqrt\\(n_embd / n_heads\\)"):
        assert_matches("attn_scaled", buggy_attn_scaled)
    report = check("attn_scaled", buggy_attn_scaled)
    assert report.mistakes == {"scale_sqrt_n_embd"} and not report.ok
    assert np.isfinite([r["max_abs_err"] for r in report.rows]).all()
