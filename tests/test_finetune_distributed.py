"""`finetune train` over two processes (accelerate launch, gloo on CPU) takes the same steps as one.

The reference is the same run in one process: with --batch-size the global batch, each process takes
its slice of every batch and DistributedDataParallel averages the gradients, so the losses and the
final weights must agree to float32 rounding (the order of the gradient sums differs). The tiny BERT
has no dropout, since each process draws its own dropout masks. The training set (37 examples,
batch 6) ends in a batch of one example, fewer than the processes: the second one takes part with
a zero-weight copy. Checkpoints: written once (by the main process), and a run interrupted after
epoch 1 and resumed in two processes ends where the uninterrupted run ends.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from test_finetune import make_tiny_model, sentiment_texts
from torch_ref.finetune.config import TrainConfig
from torch_ref.finetune.distributed import ShardedBatches, WeightedItems
from torch_ref.finetune.train import train
from triptych.common.tolerances import assert_close

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")

SETTINGS = dict(task="sst2", epochs=3, batch_size=6, train_size=37, max_length=16, lr=1e-2, seed=0)


class _Batches:
    def __init__(self, batches):
        self.batches, self.epoch = batches, None

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


@pytest.mark.parametrize("processes", [2, 3])
def test_slices_cover_every_batch_once(processes):
    """Every example of every global batch lands in exactly one process; a batch smaller than the
    number of processes pads the empty slices with zero-weight copies."""
    batches = [[4, 9, 1, 7, 3, 0], [8, 2, 5, 6, 10], [11]]
    shards = [ShardedBatches(_Batches(batches), processes, r) for r in range(processes)]
    shards[0].set_epoch(5)
    assert shards[0].batches.epoch == 5 and all(len(s) == len(batches) for s in shards)
    items = WeightedItems([{"id": i} for i in range(12)])
    for step, batch in enumerate(batches):
        parts = [list(s)[step] for s in shards]
        real = [i for p in parts for i in p if items[i]["weight"] == 1.0]
        assert real == batch  # in order, none dropped, none twice
        assert all(len(p) >= 1 for p in parts)  # every process joins the all-reduce
        padded = [items[i] for p in parts for i in p if i < 0]
        assert all(x["weight"] == 0.0 and x["id"] in batch for x in padded)
        assert len(padded) == max(0, processes - len(batch))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dropout-free tiny BERT and sst2-schema files (train 44 -> 37 after the validation split and
    --train-size, validation 22 as the test split)."""
    root = tmp_path_factory.mktemp("distributed")
    model = Path(make_tiny_model(root / "bert", "bert"))
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (model / "config.json").write_text(json.dumps(config))
    files = {}
    for split, n, seed in (("train", 44, 1), ("validation", 22, 2)):
        ds = sentiment_texts(n, seed)
        rows = [{"idx": i, "sentence": t, "label": y} for i, (t, y) in enumerate(zip(ds.texts, ds.labels))]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files[split] = str(root / f"{split}.jsonl")
    return {"root": root, "model": str(model), "files": files}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(*args, timeout=420):
    """`accelerate launch --multi_gpu --num_processes 2 cli.py finetune train ...` on CPUs: torchrun
    starts the processes, and train() joins them over gloo (accelerate's --cpu launcher starts one)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(REPO / "cli.py"), "finetune", "train", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _flags(setup, out) -> list[str]:
    f = setup["files"]
    flags = ["--data-files", f"train={f['train']},validation={f['validation']}", "--model", setup["model"],
             "--out", str(out), "--json"]
    for k, v in SETTINGS.items():
        flags += [f"--{k.replace('_', '-')}", str(v)]
    return flags


def _config(setup, out) -> TrainConfig:
    return TrainConfig(**SETTINGS, model=setup["model"], data_files=setup["files"], out=str(out))


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def _assert_same_run(two: dict, one: dict, out_two, out_one, what: str):
    assert two["processes"] == 2 and one["processes"] == 1
    assert len(two["history"]) == len(one["history"]) == SETTINGS["epochs"]
    for h2, h1 in zip(two["history"], one["history"]):
        for key in ("train_loss", "val_loss"):
            assert_close(h2[key], h1[key], "float32", "data_parallel", f"{what} epoch {h1['epoch']} {key}")
        # Accuracies count the same predictions; the schedule is a function of the step.
        assert (h2["train_acc"], h2["val_acc"], h2["lr_end"]) == (h1["train_acc"], h1["val_acc"], h1["lr_end"])
    assert_close(two["test_loss"], one["test_loss"], "float32", "data_parallel", f"{what} test loss")
    for sub in ("best", "last"):
        w2, w1 = _weights(Path(out_two) / sub), _weights(Path(out_one) / sub)
        assert w2.keys() == w1.keys()
        for name in w1:
            assert_close(w2[name].numpy(), w1[name].numpy(), "float32", "data_parallel", f"{what} {sub}/{name}")


def test_two_processes_take_the_steps_of_one(setup, tmp_path):
    one = train(_config(setup, tmp_path / "one"), quiet=True)
    proc = launch_two(*_flags(setup, tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)  # printed once: by the main process alone
    _assert_same_run(two, one, tmp_path / "two", tmp_path / "one", "2 processes vs 1")
    # The run really moved: training changed the weights far beyond the tolerance above.
    from torch_ref.finetune.models import build_classifier

    start = build_classifier(_config(setup, tmp_path).spec(2), setup["model"]).state_dict()
    trained = _weights(tmp_path / "two" / "last")
    assert max(float((trained[k] - start[k]).abs().max()) for k in trained) > 1e-2
    # Written once, renamed into place: no temporary or previous copies left beside the checkpoints.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["best", "curves.png", "last", "results.json",
                                                                   "run.json"]
    assert json.loads((tmp_path / "two" / "results.json").read_text())["test_loss"] == two["test_loss"]
    # last/ keeps both processes' random states (each draws its own dropout masks), in process order.
    state = torch.load(tmp_path / "two" / "last" / "trainer.pt", weights_only=False)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2 and state["epoch"] == SETTINGS["epochs"]


def test_resumed_in_two_processes_ends_where_the_whole_run_ends(setup, tmp_path):
    """Interrupted after epoch 1 (one process), resumed with --resume in two: both processes restore
    the same step, and the run ends on the uninterrupted run's losses and weights."""
    whole = train(_config(setup, tmp_path / "whole"), quiet=True)
    part = train(_config(setup, tmp_path / "part"), quiet=True, stop_after_epoch=1)
    assert part["interrupted_after_epoch"] == 1
    proc = launch_two("--resume", "--out", str(tmp_path / "part"), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads(proc.stdout)
    assert resumed["history"][0] == part["history"][0]  # epoch 1 comes from the checkpoint, untouched
    _assert_same_run(resumed, whole, tmp_path / "part", tmp_path / "whole", "resumed in 2 processes")
    assert torch.load(tmp_path / "part" / "last" / "trainer.pt", weights_only=False)["epoch"] == SETTINGS["epochs"]
