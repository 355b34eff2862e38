"""Runs resume as people expect: `gpt train --resume` and `finetune train --resume` read the run's
settings from its folder (run.json), extend it with a larger --steps / --epochs, refuse any other
changed flag by name and a missing run folder; a resumed run shows the validation loss it already
has; `gpt sample` and `finetune predict` take the run folder that training printed.

The commands run in-process through cli.main (one line on stderr and exit 2 for every refusal);
reference values come from the checkpoints and results files the runs wrote."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from triptych import cli
from triptych.training.checkpoint import load_checkpoint, resolve_checkpoint

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY_GPT = ["--backend", "numpy", "--batch-size", "4", "--block-size", "16", "--n-layer", "1", "--n-head", "2",
            "--n-embd", "16", "--limit-chars", "30000", "--eval-interval", "3", "--eval-batches", "2", "--warmup", "2",
            "--no-progress"]


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, " ".join(out.split()), err


def refused(capsys, *argv, names=()):
    rc, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def test_gpt_resume_reads_run_json_extends_and_refuses_changes(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run(capsys, "gpt", "train", *TINY_GPT, "--steps", "4", "--lr", "3e-3", "--out", out)[0] == 0
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["args"]["lr"] == 3e-3 and saved["args"]["steps"] == 4 and saved["config"]["n_embd"] == 16
    first = load_checkpoint(tmp_path / "run" / "ckpt.npz")[2]["history"]["train"]

    # no flag repeated: the run's own settings; --steps 6 extends it by two steps
    rc, text, _ = run(capsys, "gpt", "train", "--resume", "--out", out, "--steps", "6")
    assert rc == 0 and "resuming" in text
    meta = load_checkpoint(tmp_path / "run" / "ckpt.npz")[2]
    assert meta["step"] == 6 and meta["args"]["lr"] == 3e-3 and meta["args"]["backend"] == "numpy"
    assert meta["history"]["train"][:4] == first and len(meta["history"]["train"]) == 6
    assert json.loads((tmp_path / "run" / "run.json").read_text())["args"]["steps"] == 6

    # a finished run resumed: nothing to train, and the end line shows the checkpoint's last validation loss
    val = meta["history"]["val"][-1][1]
    rc, text, _ = run(capsys, "gpt", "train", "--resume", "--out", out, "--lr", "3e-3")  # same value: accepted
    assert rc == 0 and f"val loss {val:.4f}" in text and f"perplexity {math.exp(val):.3f}" in text
    assert "no validation yet" not in text

    line = refused(capsys, "gpt", "train", "--resume", "--out", out, "--lr", "1e-3", names=("--lr", "3e-3", "1e-3"))
    assert "new --out" in line
    refused(capsys, "gpt", "train", "--resume", "--out", out, "--n-embd", "32", names=("--n-embd", "16", "32"))
    refused(capsys, "gpt", "train", "--resume", "--out", out, "--steps", "3", names=("--steps", "6"))
    refused(capsys, "gpt", "train", "--resume", "--out", str(tmp_path / "missing"), names=("--resume", "missing"))
    assert not (tmp_path / "missing").exists()


def test_gpt_resumed_progress_starts_from_the_saved_validation_loss(tmp_path):
    from triptych.common.gpt_config import GPTConfig
    from triptych.training.data import load_char_data
    from triptych.training.trainer import TrainArgs, train

    data = load_char_data(limit_chars=30_000)
    cfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    args = TrainArgs(backend="numpy", steps=10, batch_size=4, warmup=2, eval_interval=3, eval_batches=2, ckpt_interval=1)
    train(args, cfg, data, out=tmp_path, progress=False, interrupt_at=4)
    saved_val = load_checkpoint(tmp_path / "ckpt.npz")[2]["history"]["val"][-1]
    assert saved_val[0] == 3
    res, _ = train(args, cfg, data, out=tmp_path, resume=True, progress=False, interrupt_at=5)  # no eval at 5
    assert res.interrupted and res.val_loss == saved_val[1]


def test_gpt_sample_takes_a_run_folder_and_defaults_to_the_latest_run(tmp_path, capsys):
    out = tmp_path / "runs" / "gpt" / "numpy"
    assert run(capsys, "gpt", "train", *TINY_GPT, "--steps", "2", "--out", str(out))[0] == 0
    by_file = run(capsys, "gpt", "sample", "--ckpt", str(out / "ckpt.npz"), "--length", "30")
    by_folder = run(capsys, "gpt", "sample", "--ckpt", str(out), "--length", "30")
    assert by_file[0] == by_folder[0] == 0 and by_file[1] == by_folder[1]
    older = tmp_path / "runs" / "gpt" / "llama-torch" / "ckpt.npz"  # another backend and arch, written earlier
    older.parent.mkdir()
    older.write_bytes((out / "ckpt.npz").read_bytes())
    os.utime(older, (1, 1))
    assert resolve_checkpoint(None, root=tmp_path / "runs" / "gpt") == out / "ckpt.npz"
    os.utime(older, None)  # now the newest
    assert resolve_checkpoint(None, root=tmp_path / "runs" / "gpt") == older
    with pytest.raises(Exception, match="--ckpt"):
        resolve_checkpoint(None, root=tmp_path / "nothing")


@pytest.fixture(scope="module")
def sst2_files(tmp_path_factory):
    from test_finetune import sentiment_texts

    root = tmp_path_factory.mktemp("sst2")
    files = {}
    for split, n, seed in (("train", 24, 1), ("validation", 8, 2)):
        ds = sentiment_texts(n, seed)
        rows = [{"idx": i, "sentence": t, "label": y} for i, (t, y) in enumerate(zip(ds.texts, ds.labels))]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[split] = str(root / f"{split}.jsonl")
    return ",".join(f"{k}={v}" for k, v in files.items())


def test_finetune_resume_extends_refuses_and_predicts_from_the_run_folder(tmp_path, capsys, sst2_files):
    from test_finetune import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny-bert", "bert")
    capsys.readouterr()  # transformers' own save progress
    out = str(tmp_path / "run")
    refused(capsys, "finetune", "train", "--resume", "--out", str(tmp_path / "missing"), names=("--resume", "missing"))
    assert not (tmp_path / "missing").exists()

    flags = ["--task", "sst2", "--data-files", sst2_files, "--model", model, "--batch-size", "8", "--max-length", "16",
             "--lr", "1e-2", "--out", out, "--json"]
    assert run(capsys, "finetune", "train", *flags, "--epochs", "1")[0] == 0
    one = json.loads((tmp_path / "run" / "results.json").read_text())
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert saved["lr"] == 1e-2 and saved["epochs"] == 1 and saved["model"] == model

    rc, _, _ = run(capsys, "finetune", "train", "--resume", "--out", out, "--epochs", "2", "--json")
    assert rc == 0
    two = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(two["history"]) == 2 and two["config"]["lr"] == 1e-2
    assert two["history"][0] == one["history"][0]  # epoch 1 read back, not retrained

    refused(capsys, "finetune", "train", "--resume", "--out", out, "--lr", "1e-3", names=("--lr", "0.01", "1e-3"))
    refused(capsys, "finetune", "train", "--resume", "--out", out, "--epochs", "1", names=("--epochs", "2"))

    by_folder = run(capsys, "finetune", "predict", "--checkpoint", out, "the tea was great", "--json")
    by_best = run(capsys, "finetune", "predict", "--checkpoint", f"{out}/best", "the tea was great", "--json")
    assert by_folder[0] == by_best[0] == 0 and by_folder[1] == by_best[1]
    probs = json.loads(by_folder[1])[0]["probs"]
    assert abs(sum(probs.values()) - 1) < 1e-6 and np.isfinite(list(probs.values())).all()


def test_experiment_time_is_each_runs_own_and_llama_plot_is_titled_by_arch(tmp_path, capsys, monkeypatch):
    import time

    from triptych.training.data import load_char_data
    from triptych.training.experiments import Budget, row_cells, run_experiment

    data = load_char_data(limit_chars=20_000)
    budget = Budget(backend="numpy", steps=3, batch_size=2, block_size=8, n_layer=1, n_head=2, n_embd=16,
                    eval_batches=1)
    cache, t0 = {}, time.perf_counter()
    rows = run_experiment("similarity", budget, data, progress=False, cache=cache, out=tmp_path)
    rows += run_experiment("shared-projections", budget, data, progress=False, cache=cache, out=tmp_path)
    wall = time.perf_counter() - t0
    own = load_checkpoint(tmp_path / "runs" / "similarity" / "dot" / "ckpt.npz")[2]["seconds"]
    assert rows[0].seconds == own and row_cells(rows[0])[5] == f"{own:.1f}"
    shared = rows[3]  # shared-projections' baseline is similarity's dot run: trained once, said so
    assert shared.variant == "separate Q,K,V" and shared.seconds == own
    assert "same run as in similarity" in row_cells(shared)[6]
    assert sum(r.seconds for r in rows if "trained_for" not in r.extra) <= wall

    titles = []
    monkeypatch.setattr("triptych.training.plots.plot_loss_curves", lambda runs, path, title="": titles.append(title))
    rc, _, err = run(capsys, "gpt", "train", "--arch", "llama", *TINY_GPT, "--steps", "2", "--out", str(tmp_path / "llama"))
    assert rc == 0, err
    assert titles and "Llama" in titles[0] and "GPT" not in titles[0]
