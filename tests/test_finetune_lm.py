"""`finetune lm` end to end in a subprocess: SmolLM2 cut to 2 layers, LoRA on q and v, a few AdamW
steps on Austen with the numpy backend (hand-written backward) and the torch backend (peft): the
validation loss falls, results.json and the checkpoint are written, a run stopped and resumed takes
the losses of the uninterrupted run, and misuse is one line with exit 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from triptych.common.tolerances import assert_close

REPO = Path(__file__).resolve().parents[1]
TINY = ["--layers", "2", "--block", "32", "--batch-size", "4", "--lr", "5e-3", "--val-rows", "4",
        "--sample-tokens", "5"]


def cli(*args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "150"}
    return subprocess.run([sys.executable, str(REPO / "cli.py"), "finetune", "lm", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smollm2_present():
    from triptych.pretrained import ModelMissingError, smollm2

    try:
        smollm2.gguf_path()
    except ModelMissingError as e:
        pytest.skip(str(e))


def _run(out: Path, backend: str, steps: int, *extra) -> dict:
    proc = cli("--backend", backend, "--steps", str(steps), "--out", str(out), "--no-progress", *TINY, *extra)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def numpy_run(smollm2_present, tmp_path_factory):
    out = tmp_path_factory.mktemp("numpy")
    return out, _run(out, "numpy", 6)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_validation_loss_falls(numpy_run, tmp_path, backend):
    out, res = numpy_run if backend == "numpy" else (tmp_path, _run(tmp_path, backend, 6))
    assert res["backend"] == backend and res["layers"] == 2 and len(res["history"]) == 6
    assert res["trainable_params"] == 2 * 8 * ((576 + 576) + (576 + 192))  # 2 layers, r 8; q: 576->576, v: 576->192
    assert res["val_loss_after"] < res["val_loss_before"] - 0.5
    assert res["sample"].startswith(res["prompt"]) and len(res["sample"]) > len(res["prompt"])
    assert {p.name for p in (out / "checkpoint").iterdir()} >= {"adapters.npz", "state.json"}


def test_torch_starts_where_numpy_starts(numpy_run, tmp_path):
    """Same pretrained weights, same B = 0 start, same first batch: the first loss agrees across backends."""
    res = _run(tmp_path, "torch", 1)
    ref = numpy_run[1]
    assert_close(res["history"][0]["loss"], ref["history"][0]["loss"], "float32", kind="trajectory", what="step 0")
    assert_close(res["val_loss_before"], ref["val_loss_before"], "float32", kind="trajectory", what="val before")


def test_resume_takes_the_uninterrupted_losses(numpy_run, tmp_path):
    _run(tmp_path, "numpy", 3)
    res = _run(tmp_path, "numpy", 6, "--resume")
    ref = numpy_run[1]
    # the same arithmetic on the same saved arrays: NumPy repeats itself bit for bit
    assert [h["loss"] for h in res["history"]] == [h["loss"] for h in ref["history"]]
    assert res["val_loss_before"] == ref["val_loss_before"]


@pytest.mark.parametrize("args, fragment", [
    (["--targets", "q,x"], "targets: expected distinct names from q, k, v, o, gate, up, down"),
    (["--rank", "0"], "--rank"),
    (["--backend", "mlx"], "--backend"),
])
def test_misuse_is_one_line(args, fragment):
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if "out of date" not in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr and fragment in lines[0], proc.stderr
