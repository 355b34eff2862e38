"""lesson modern-block: the step-by-step Llama block agrees across NumPy, JAX and torch, its output
equals Hugging Face's LlamaDecoderLayer, and the W_q/W_k row permutation turns the half RoPE layout
into the interleaved one exactly."""
from __future__ import annotations

import numpy as np
import pytest

from triptych.common.tolerances import assert_close
from triptych.lessons import modern_block as L


@pytest.fixture(scope="module")
def result():
    return L.compute()


def test_every_step_agrees_with_torch_in_float64(result):
    assert [s["step"] for s in result["steps"]] == [label for label, _ in L.STEPS]
    for s in result["steps"]:
        assert s["ok"] and s["max_abs_err"] <= 1e-10, s
    assert result["ok"]


def test_block_output_equals_hugging_faces_decoder_layer():
    from triptych.crosscheck.cases import run_on_backends

    i = L.inputs(3, np.float32)  # another seed than the lesson's
    hf = L.hf_block(i)
    outs = run_on_backends(L.block_steps, i)
    for backend in ("numpy", "jax", "torch"):
        assert_close(outs[backend][-1], hf, "float32", what=f"{backend} block vs LlamaDecoderLayer")
    assert np.max(np.abs(hf - i["x"])) > 0.1  # the layer did something: not a residual passing x through


def test_permuted_rows_make_the_interleaved_layout_exact(result):
    lay = result["layouts"]
    for r in lay["rows"]:
        assert r["q_rot_differs_by"] > 1.0  # the rotated queries really are in another channel order
        assert r["q_rot_after_unpermuting"] <= 1e-10 and r["weights"] <= 1e-10 and r["output"] <= 1e-10, r
    assert lay["unpermuted_output_err"] > 0.1  # without converting the weights the layout matters
    assert result["layouts_ok"]

