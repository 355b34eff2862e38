"""`finetune train --backend numpy|jax` end to end on a few fine-foods reviews: the run's record, its
trainable count against models.expected_trainable (the count written out from the architecture), and
the one-line refusals. The engines' gradients and AdamW steps are proven in parity_tests/test_bert_finetune.py."""
from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.mark.parametrize("backend,method", [("numpy", "lora"), ("jax", "prefix")])
def test_engine_run_records_results(tmp_path, capsys, backend, method):
    from transformers import AutoConfig

    from torch_ref.finetune.config import ModelSpec
    from torch_ref.finetune.models import expected_trainable, resolve_model
    from triptych import cli

    code = cli.main(["finetune", "train", "--backend", backend, "--method", method, "--train-size", "8",
                     "--val-size", "8", "--test-size", "8", "--epochs", "2", "--batch-size", "4", "--max-length", "16",
                     "--prefix-length", "4", "--json", "--out", str(tmp_path)])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads((tmp_path / "results.json").read_text())
    assert (res["backend"], res["method"], len(res["history"])) == (backend, method, 2)
    config = AutoConfig.from_pretrained(resolve_model("minilm"), num_labels=2)
    assert res["trainable_params"] == expected_trainable(ModelSpec(method=method, prefix_length=4), config)
    best = np.load(tmp_path / "best_trainable.npz")
    assert sum(best[k].size for k in best.files) == res["trainable_params"]
    assert 0.0 <= res["test_acc"] <= 1.0 and np.isfinite(res["test_loss"])


def test_engine_refuses_other_optimizers(capsys):
    from triptych import cli

    code = cli.main(["finetune", "train", "--backend", "numpy", "--optimizer", "sgd", "--train-size", "8"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--backend numpy" in err and "adamw" in err and "Traceback" not in err
