"""numpy_impl/fast.py's in-place kernels give the numbers of the readable steps they stand in for
(numpy_impl/attention.py's attn_softmax, numpy_impl/layers.py's GELU and LayerNorm), and both
give torch's: values and gradients (torch autograd is the referee), in float32 and float64, and
neither writes into its caller's arrays."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triptych.common.tolerances import assert_close
from numpy_impl import attention as natt
from numpy_impl import fast
from numpy_impl import layers

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masking", ["none", "random"])
def test_attn_softmax_fast_equals_readable_and_torch(dtype, masking):
    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((2, 3, 7, 9)) * 4).astype(dtype)
    mask = None
    if masking == "random":
        mask = rng.random((2, 1, 7, 9)) < 0.5
        mask[..., 2, :] = False  # a fully masked row: zeros, never NaN
    before = scores.copy()
    readable = natt.attn_softmax(scores, mask)
    quick = fast.attn_softmax(scores, mask)
    assert np.array_equal(scores, before)  # the caller's scores are never the buffer
    assert readable.dtype == quick.dtype == dtype
    ts = torch.from_numpy(scores)
    if mask is not None:
        ts = ts.masked_fill(~torch.from_numpy(mask), float("-inf"))
    ref = torch.nan_to_num(torch.softmax(ts, dim=-1), nan=0.0)  # torch gives NaN on a dead row
    assert_close(readable, ref, dtype, what="readable")
    assert_close(quick, ref, dtype, what="fast")
    assert_close(quick, readable, dtype, what="fast vs readable")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_fast_equals_readable_and_torch(dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((3, 5, 16)) * 3).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = F.gelu(tx, approximate="tanh")
    ty.backward(torch.from_numpy(dout))
    before = x.copy()
    for name, mod in (("readable", layers), ("fast", fast)):
        y, cache = mod.gelu_forward(x)
        dx = mod.gelu_backward(dout, cache)
        assert y.dtype == dx.dtype == dtype, name
        assert_close(y, ty.detach(), dtype, what=f"{name} gelu")
        assert_close(dx, tx.grad, dtype, kind="grad", what=f"{name} dgelu")
    assert np.array_equal(x, before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_fast_equals_readable_and_torch(dtype):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((4, 6, 12)) * 2 + 1).astype(dtype)
    w = rng.standard_normal(12).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    tx, tw, tb = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    F.layer_norm(tx, (12,), tw, tb, eps=1e-5).backward(torch.from_numpy(dout))
    ref = F.layer_norm(torch.from_numpy(x), (12,), torch.from_numpy(w), torch.from_numpy(b), eps=1e-5)
    before = x.copy()
    for name, mod in (("readable", layers), ("fast", fast)):
        y, cache = mod.layer_norm_forward(x, w, b)
        dx, dw, db = mod.layer_norm_backward(dout, cache)
        assert y.dtype == dx.dtype == dtype, name
        assert_close(y, ref, dtype, what=f"{name} layer_norm")
        for what, g, t in (("dx", dx, tx), ("dweight", dw, tw), ("dbias", db, tb)):
            assert_close(g, t.grad, dtype, kind="grad", what=f"{name} {what}")
    assert np.array_equal(x, before)
