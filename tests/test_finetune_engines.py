"""`finetune train --backend numpy|jax` end to end on a few fine-foods reviews: the run's records in the
torch backend's layout, its trainable count against models.expected_trainable (the count written out
from the architecture), best/ read by `finetune predict` against the engine's own logits, --resume
against an uninterrupted run, and the one-line refusals. The engines' gradients and AdamW steps are
proven in parity_tests/test_bert_finetune.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

TINY = ["--train-size", "8", "--val-size", "8", "--test-size", "8", "--epochs", "2", "--batch-size", "4",
        "--max-length", "16", "--prefix-length", "4"]
# What the torch backend's results.json and history rows hold (torch_ref/finetune/train.py's _finish and
# _train_epoch); the engines add "backend".
RESULT_KEYS = {"task", "model", "method", "config", "trainable_params", "total_params", "sizes", "majority_test_acc",
               "best_epoch", "best_val_acc", "test_loss", "test_acc", "history", "train_time_s", "device",
               "precision", "processes"}
ROW_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "train_time_s", "epoch_time_s", "lr_end"}


def _cli(capsys, *argv):
    from triptych import cli

    code = cli.main(["finetune", "train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _check_records(res: dict, out, backend: str, method: str) -> None:
    from transformers import AutoConfig

    from torch_ref.finetune.config import ModelSpec
    from torch_ref.finetune.models import expected_trainable, resolve_model

    assert set(res) == RESULT_KEYS - {"config"} | {"backend"}  # --json leaves the config out, as for torch
    assert json.loads((out / "results.json").read_text())["config"]["backend"] == backend
    assert json.loads((out / "run.json").read_text())["config"]["backend"] == backend
    assert (res["backend"], res["method"], res["processes"], len(res["history"])) == (backend, method, 1, 2)
    assert all(set(row) == ROW_KEYS for row in res["history"])
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = AutoConfig.from_pretrained(resolve_model("minilm"), num_labels=2)
    assert res["trainable_params"] == expected_trainable(ModelSpec(method=method, prefix_length=4), config)
    assert 0.0 <= res["test_acc"] <= 1.0 and np.isfinite(res["test_loss"])
    n_train = res["sizes"]["train"]  # train_acc counts right answers over the epoch's examples
    assert all(0 <= row["train_acc"] <= 1 and abs(row["train_acc"] * n_train - round(row["train_acc"] * n_train)) < 1e-9
               for row in res["history"])


def _engine_state(out) -> dict:
    with np.load(out / "last" / "engine_state.npz") as z:
        return {k[len("param."):]: z[k] for k in z.files if k.startswith("param.")}


def _softmax(logits) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _check_predict(out, method: str) -> None:
    """best/ through `finetune predict` vs softmax of numpy_impl's logits with the engine's own weights
    (last/ after one epoch holds the same epoch as best/), tokenised by the tokenizer alone."""
    from numpy_impl.bert_finetune import bert_finetune_logits
    from torch_ref.finetune.config import TrainConfig
    from torch_ref.finetune.train import predict
    from triptych.common.tolerances import assert_close
    from triptych.pretrained import minilm
    from triptych.training.bert_classify import init_classifier

    texts = ["the tea was great, I will buy it again", "awful stale cookies"]
    frozen, _, n_heads, eps = init_classifier(method, 2, prefix_length=4)
    enc = minilm.tokenizer()(texts, padding=True, truncation=True, max_length=16, return_tensors="np")
    logits = bert_finetune_logits(method, frozen, _engine_state(out), enc["input_ids"], enc["attention_mask"],
                                  enc["token_type_ids"], n_heads, eps, float(TrainConfig().lora_alpha))
    rows = predict(out, texts)
    probs = np.array([list(r["probs"].values()) for r in rows])
    # float32 both ways (torch's kernels vs ours) on the real 6-layer model: the float32 value row.
    assert_close(probs, _softmax(logits).astype(np.float32), kind="value", what="predict vs engine")


@pytest.mark.parametrize("backend,method", [("numpy", "lora"), ("jax", "prefix")])
def test_engine_records_predicts_and_resumes(tmp_path, capsys, backend, method):
    """Whole 2-epoch run; the same run stopped after epoch 1, then `--resume` without --backend: the
    same losses, the same final weights and the same best/ (the engines draw no random numbers)."""
    from torch_ref.finetune.config import TrainConfig
    from torch_ref.finetune.train import load_checkpoint
    from triptych.training.bert_classify import train_engine

    a, b = tmp_path / "a", tmp_path / "b"
    code, out, _ = _cli(capsys, "--backend", backend, "--method", method, *TINY, "--json", "--out", str(a))
    assert code == 0
    whole = json.loads(out)
    _check_records(whole, a, backend, method)
    cfg = TrainConfig(**{**json.loads((a / "run.json").read_text())["config"], "out": str(b)})
    part = train_engine(cfg, quiet=True, stop_after_epoch=1)
    assert part["interrupted_after_epoch"] == 1
    _check_predict(b, method)
    code, _, err = _cli(capsys, "--resume", "--out", str(b), "--backend", "torch")
    assert code == 2 and "--backend" in err and backend in err and len(err.strip().splitlines()) == 1
    code, out, _ = _cli(capsys, "--resume", "--out", str(b), "--json")
    assert code == 0
    resumed = json.loads(out)
    assert resumed["backend"] == backend
    times = ("train_time_s", "epoch_time_s")
    assert [{k: v for k, v in h.items() if k not in times} for h in resumed["history"]] == \
        [{k: v for k, v in h.items() if k not in times} for h in whole["history"]]
    assert (resumed["test_loss"], resumed["test_acc"]) == (whole["test_loss"], whole["test_acc"])
    final_a, final_b = _engine_state(a), _engine_state(b)
    assert sorted(final_a) == sorted(final_b) and all(np.array_equal(final_a[k], final_b[k]) for k in final_a)
    best_a, best_b = load_checkpoint(a)[0].state_dict(), load_checkpoint(b)[0].state_dict()
    assert all(np.array_equal(best_a[k].numpy(), best_b[k].numpy()) for k in best_a)


@pytest.mark.parametrize("flags,named", [
    (["--optimizer", "sgd"], "--optimizer"),
    (["--model", "bert-base-uncased"], "--model"),
    (["--lora-dropout", "0.1"], "--lora-dropout"),
    (["--precision", "bf16"], "--precision"),
])
def test_engine_refuses_what_it_cannot_do(tmp_path, capsys, flags, named):
    code, _, err = _cli(capsys, "--backend", "numpy", "--method", "lora", *flags, "--out", str(tmp_path))
    assert code == 2 and err.startswith(f"error: {named}:")
    assert "--backend numpy" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_engine_refuses_several_processes(tmp_path, capsys, monkeypatch):
    """Under `accelerate launch --num_processes 2` (which sets WORLD_SIZE) every process would train
    the same engine run and write the same files: refused in one line, before any work."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = _cli(capsys, "--backend", "jax", "--out", str(tmp_path))
    assert code == 2 and err.startswith("error: --backend:") and "2 processes" in err
    assert len(err.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


def test_run_without_backend_resumes_as_torch(tmp_path, capsys):
    """run.json written before backends were recorded: --resume reads it as a torch run, and a typed
    --backend numpy is refused by name against it (both before any data or model is loaded)."""
    from torch_ref.finetune.checkpoints import RUN_FORMAT, run_settings
    from torch_ref.finetune.config import TrainConfig
    from triptych import cli
    from triptych.commands.finetune import _resumed_config

    old = {k: v for k, v in run_settings(TrainConfig(epochs=1)).items() if k not in ("backend", "precision")}
    (tmp_path / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "config": old}))
    args = cli.build_parser().parse_args(["finetune", "train", "--resume", "--out", str(tmp_path), "--json"])
    assert _resumed_config(args).backend == "torch"
    code, _, err = _cli(capsys, "--resume", "--out", str(tmp_path), "--backend", "numpy")
    assert code == 2 and err.startswith("error: --backend:") and "torch" in err and "numpy" in err
    # --precision too came after such runs: typing its default value is the run's own setting.
    args = cli.build_parser().parse_args(["finetune", "train", "--resume", "--out", str(tmp_path), "--json",
                                          "--precision", "auto"])
    assert _resumed_config(args).precision == "auto"
    code, _, err = _cli(capsys, "--resume", "--out", str(tmp_path), "--precision", "bf16")
    assert code == 2 and err.startswith("error: --precision:") and "auto" in err and "bf16" in err
