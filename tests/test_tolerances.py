"""One comparison rule (triptych/common/tolerances.py) for parity, the checker, the lessons and the
pretrained traces, and dtype names that are right for every framework's dtypes."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from triptych.common import tolerances as T
from triptych.crosscheck import _match, cases
from triptych.pretrained import trace

TOL = T.tolerance("float64")  # parity (triptych/crosscheck/cases.py) looks this row up itself
INF, NAN = np.inf, np.nan


@pytest.mark.parametrize("dtype, name", [
    (np.float32, "float32"), (np.float64, "float64"), (np.int64, "int64"), (np.bool_, "bool"),
    (np.dtype("float32"), "float32"), (np.dtype(np.float64), "float64"),
    (jnp.float32, "float32"), (jnp.bfloat16, "bfloat16"), (jnp.zeros(2, jnp.float32).dtype, "float32"),
    (torch.float32, "float32"), (torch.float64, "float64"), (torch.bfloat16, "bfloat16"), (torch.bool, "bool"),
    (np.zeros(2, np.float32), "float32"), (torch.zeros(2, dtype=torch.float64), "float64"), ("float16", "float16"),
])
def test_dtype_name_for_every_framework(dtype, name):
    assert T.dtype_name(dtype) == name


def test_tolerance_looks_up_the_same_row_for_every_framework():
    rows = {T.tolerance(d) for d in (np.float32, np.dtype("float32"), jnp.float32, torch.float32, "float32")}
    assert rows == {T.TOLERANCES[("value", "float32")]}


# (got, ref, agree?) under the rule: equal infinities and NaN where the reference has NaN agree;
# any other NaN or infinity, on either side, does not; an infinite reference never widens its bound.
RULE = [
    ([1.0, -INF], [1.0, -INF], True),
    ([1.0, INF], [1.0, INF], True),
    ([NAN, 2.0], [NAN, 2.0], True),
    ([1.0, INF], [1.0, -INF], False),
    ([1.0, 5.0], [1.0, INF], False),
    ([1.0, NAN], [1.0, 2.0], False),
    ([1.0, 2.0], [1.0, NAN], False),
    ([1.0, -INF], [1.0, -1e9], False),
    ([1.0, 2.0 + 5e-11], [1.0, 2.0], True),   # 5e-11 <= atol + rtol * 2 = 3e-10
    ([1.0, 2.0 + 4e-10], [1.0, 2.0], False),  # 4e-10 > 3e-10
]


@pytest.mark.parametrize("got, ref, agree", RULE)
def test_one_rule_everywhere(got, ref, agree):
    got, ref = np.array(got), np.array(ref)
    ok, err = T.compare(got, ref, TOL)
    assert ok is agree and T.within(got, ref, TOL) is agree
    assert (T.used(got, ref, TOL) <= 1.0) is agree
    assert T.max_abs_err(got, ref) == err
    # the checker's compare is this function, not a copy
    assert _match.compare is T.compare
    # parity: torch's output is the reference, numpy's and jax's are compared to it
    row = cases.compare("op", {"numpy": [got], "jax": [got], "torch": [ref]}, np.float64)
    assert row["ok"] is agree and row["max_abs_err"] == err
    # pretrained traces: one row per step, "used" <= 1 passes
    step = trace.Step(layer=0, name="scores", value=got)
    rows = trace.compare({"numpy": [step]}, [trace.Step(layer=0, name="scores", value=ref)], TOL)
    assert rows[0]["ok"] is agree and rows[0]["max_abs_err"]["numpy"] == err


def test_errors_are_the_distance_where_finite():
    got, ref = np.array([1.5, -INF, 0.25]), np.array([1.0, -INF, 1.0])
    err, size = T.errors(got, ref)
    assert err.tolist() == [0.5, 0.0, 0.75]
    assert size.tolist() == [1.0, 0.0, 1.0]


def test_shapes_and_bools():
    assert T.compare(np.zeros(3), np.zeros(4), TOL) == (False, INF)
    assert T.compare(np.array([True, False]), np.array([True, True]), TOL) == (False, 1.0)
    assert T.compare(np.zeros(0), np.zeros(0), TOL) == (True, 0.0)
    assert T.within(torch.tensor([1.0, -INF]), jnp.array([1.0, -INF]), TOL)


def test_assert_close_names_the_worst_element():
    with pytest.raises(AssertionError, match=r"at \(1,\) got inf, reference -inf"):
        T.assert_close(np.array([1.0, INF]), np.array([1.0, -INF]), kind="value")
    T.assert_close(np.array([1.0, -INF]), np.array([1.0, -INF]))
