"""Every op of the parity registry (crosscheck.cases.all_cases()), NumPy and JAX against torch,
float64 and float32 at B=4, H=8, T=128, d_head=64.

The same registry drives `python cli.py parity`, so a row that passes here passes there."""
import numpy as np
import pytest

from triptych.common.tolerances import assert_close
from triptych.crosscheck.cases import all_cases, run_case

CASES = all_cases()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c.op for c in CASES])
def test_numpy_and_jax_match_torch(case, dtype):
    row = run_case(case, dtype)
    ref = row["outputs"]["torch"]
    for backend in ("numpy", "jax"):
        got = row["outputs"][backend]
        assert len(got) == len(ref)
        for i, (a, r) in enumerate(zip(got, ref)):
            assert a.dtype == r.dtype, f"{backend} output {i} is {a.dtype}, torch gives {r.dtype}"
            assert not np.isnan(a).any(), f"{backend} output {i} has NaN"
            assert_close(a, r, dtype, what=f"{case.op} [{backend} output {i}]")
    assert row["ok"]
