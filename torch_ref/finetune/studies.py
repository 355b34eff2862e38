"""The fine-tuning studies of exercises.md section H, each a few training runs plus a table and a plot.

    overfit                10 training examples must reach 100% training accuracy (a sanity check)
    batch-size             the largest batch whose training step fits (GPU: catch OOM; CPU: a memory budget)
    grid                   learning rate x epochs, chosen on validation, reported on test
    optimizers             AdamW against two other torch optimizers, curves in one plot
    methods                full vs head vs prefix vs LoRA: accuracy, trainable parameters, time, memory
                           (torch beside the NumPy engine; study_methods.py)
    pretrained-vs-scratch  the same architecture from pretrained and from random weights
    topic-news             train on brown-topics, then label four hand-written news stories

Defaults are small enough for a CPU with a few cores (a few hundred examples, short texts); every one of them
is a flag (--train-size, --max-length, --epochs, ...) to scale up on a GPU.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from triptych.common.checks import InputError
from torch_ref.finetune.data import Task
from torch_ref.finetune.config import GRID_EPOCHS, GRID_LRS, METHODS, OPTIMIZERS, STUDY_OPTIMIZERS, TrainConfig
from torch_ref.finetune.study_methods import methods
from torch_ref.finetune.study_output import finish as _finish, majority_acc as _majority, print_table as _table
from torch_ref.finetune.study_output import study_task as _load
from torch_ref.finetune.train import predict, train

__all__ = ["STUDY_DEFAULTS", "NEWS_TEXTS", "run_study", "study_config", "methods"]

# Per study: the TrainConfig fields a flag left unset falls back to (CPU-sized).
STUDY_DEFAULTS = {
    "overfit": dict(train_size=10, val_size=10, test_size=200, epochs=15, batch_size=10, max_length=64,
                    lr=1e-4, warmup=0.0, weight_decay=0.0),
    "batch-size": dict(max_length=128),
    "grid": dict(train_size=200, val_size=200, test_size=400, epochs=7, max_length=64),
    "optimizers": dict(train_size=400, val_size=200, test_size=400, epochs=3, max_length=64),
    # 800: with 400 examples (75 steps) full fine-tuning had not yet left the majority class.
    "methods": dict(train_size=800, val_size=200, test_size=400, epochs=3, max_length=64),
    "pretrained-vs-scratch": dict(train_size=600, val_size=200, test_size=400, epochs=3, max_length=64),
    "topic-news": dict(task="brown-topics", train_size=1500, val_size=300, test_size=600, epochs=2, max_length=96),
}

# Learning rates per optimizer when --lr is not given: plain SGD needs far larger steps than Adam-family
# methods, RMSprop without bias correction somewhat smaller ones.
OPTIMIZER_LR = {"adamw": 5e-5, "adam": 5e-5, "sgd": 1e-2, "rmsprop": 2e-5, "adagrad": 1e-3}

# Four short news stories in the spirit of exercises.md section H, with the topic a reader would give.
NEWS_TEXTS = [
    ("The home team rallied from twelve points down in the fourth quarter, and their point guard sank "
     "a three-pointer at the buzzer to win the basketball game 98 to 97 before a sold-out crowd.", "sports"),
    ("Palaeontologists digging in the badlands of Montana announced the discovery of a nearly complete "
     "dinosaur skeleton, a plant-eater some seventy million years old, with fossilised skin on its tail.",
     "science"),
    ("The Secretary-General of the United Nations called on both governments to agree to an immediate "
     "ceasefire and to open the border so that food and medicine can reach civilians.", "world"),
    ("The company said on Tuesday that it will open a new warehouse outside the city next spring, "
     "creating about four hundred jobs and cutting delivery times for its customers.", "business"),
]


def study_config(name: str, args=None, **overrides) -> TrainConfig:
    """The TrainConfig for a study: flags the user gave, else the study's CPU-sized defaults, else
    TrainConfig's own defaults. (The study parser's flags default to None = "not given".)"""
    fields = dict(STUDY_DEFAULTS[name])
    if args is not None:
        fields.update({n: getattr(args, n) for n in _CONFIG_FLAGS if getattr(args, n, None) is not None})
    fields.update(overrides)
    fields.setdefault("out", f"runs/finetune/study-{name}")
    return TrainConfig(**fields)


_CONFIG_FLAGS = ("task", "model", "method", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "warmup",
                 "max_grad_norm", "max_length", "train_size", "val_size", "test_size", "seed", "prefix_length",
                 "lora_r", "lora_alpha", "lora_dropout", "data_files", "precision", "out")


# ---------------------------------------------------------------------------------------------------


def overfit(cfg: TrainConfig, console, quiet=False, task: Task | None = None) -> dict:
    """Train on 10 examples and validate on the same 10: validation accuracy is then the training
    accuracy measured in eval mode (no dropout). A model and loop that cannot reach 100% here are broken."""
    full = _load(cfg, task)
    few = full.train.take(cfg.train_size, cfg.seed)
    tiny = Task(full.name, full.label_names, few, few, full.test, "validation = the training examples")
    res = train(replace(cfg, train_size=None, val_size=None), tiny, console=console, quiet=quiet)
    final = res["history"][-1]["val_acc"]
    passed = final == 1.0
    first_perfect = next((h["epoch"] for h in res["history"] if h["val_acc"] == 1.0), None)
    if not quiet:
        console.print(f"overfit {len(few)} examples: final training accuracy {final:.0%} "
                      + (f"[green]PASS[/] (100% first at epoch {first_perfect})" if passed else "[red]FAIL[/]"))
    out = Path(cfg.out)
    return _finish(out, {"study": "overfit", "examples": len(few), "final_train_acc": final, "passed": passed,
                         "first_perfect_epoch": first_perfect, "history": res["history"],
                         "plots": [str(out / "curves.png")]}, console, quiet)


def _step_peak(model, optimizer, b: int, max_length: int, device):
    """(peak bytes, seconds) of one training step (forward, backward, optimizer step) on a batch of b
    random texts of max_length tokens; None when CUDA runs out of memory."""
    import torch

    from torch_ref.finetune.memory import peak_bytes

    on_gpu = device.type == "cuda"
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(b)
    # Ordinary word ids (past the special tokens at the start of the vocabulary), no padding.
    ids = torch.randint(min(1000, vocab // 2), vocab, (b, max_length), generator=g).to(device)
    labels = torch.zeros(b, dtype=torch.long, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            logits = model(ids, torch.ones_like(ids))
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    try:
        peak, _ = peak_bytes(step, device)
    except torch.cuda.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return None
    return peak, time.perf_counter() - t0


def _plot_batches(rows: list[dict], cfg: TrainConfig, out: Path, budget_gb) -> list[str]:
    measured = [r for r in rows if r["peak_gb"] is not None]
    if not measured:
        return []
    from torch_ref.finetune.plots import plot_bars

    return [str(plot_bars([str(r["batch"]) for r in measured],
                          {"peak GiB per training step": [r["peak_gb"] for r in measured],
                           "seconds per step": [r["step_s"] for r in measured]},
                          out / "batch_size.png", f"{cfg.model} {cfg.method}, {cfg.max_length} tokens"
                          + (f", CPU budget {budget_gb:.1f} GiB" if budget_gb else "")))]


def batch_size(cfg: TrainConfig, console, quiet=False, budget_gb: float | None = None, max_batch: int = 1024,
               task: Task | None = None) -> dict:
    """Double the batch from 1 until a full training step (forward, backward, optimizer step) at
    max_length tokens per example no longer fits: on GPU until CUDA runs out of memory, on CPU until
    the measured peak passes the budget (default: a quarter of the memory free now)."""
    import torch

    from torch_ref.finetune.models import build_classifier, resolve_model
    from torch_ref.finetune.train import make_optimizer

    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    if budget_gb is None and not on_gpu:
        budget_gb = _available_gb() / 4
    model = build_classifier(cfg.spec(2), resolve_model(cfg.model)).to(device)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    rows, best, b = [], None, 1
    while b <= max_batch:
        measured = _step_peak(model, optimizer, b, cfg.max_length, device)
        if measured is None:
            rows.append({"batch": b, "peak_gb": None, "step_s": None, "fits": False})
            break
        peak, seconds = measured
        fits = on_gpu or peak / 2**30 <= budget_gb
        rows.append({"batch": b, "peak_gb": peak / 2**30, "step_s": seconds, "fits": fits})
        if not quiet:
            console.print(f"batch {b:5d}: peak {peak / 2**30:7.3f} GiB, step {seconds:6.2f} s "
                          + ("fits" if fits else f"[red]over the {budget_gb:.1f} GiB budget[/]"))
        if not fits:
            break
        best, b = b, 2 * b
    out = Path(cfg.out)
    plots = _plot_batches(rows, cfg, out, budget_gb)
    if not quiet:
        console.print(f"largest batch that fits: [bold]{best}[/] ({'GPU memory' if on_gpu else f'budget {budget_gb:.1f} GiB'}"
                      f", {cfg.max_length} tokens per example)")
    return _finish(out, {"study": "batch-size", "device": str(device), "budget_gb": budget_gb,
                         "max_length": cfg.max_length, "largest_batch": best, "rows": rows, "plots": plots},
                   console, quiet)


def _available_gb() -> float:
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 2**20


def grid(cfg: TrainConfig, console, quiet=False, lrs=None, epoch_list=None, task: Task | None = None) -> dict:
    """Every (lr, epochs) pair trains from the same start; the pair with the best validation accuracy
    is chosen, and only its test accuracy is reported as the result."""
    lrs = lrs or list(GRID_LRS)
    epoch_list = epoch_list or list(GRID_EPOCHS)
    task = _load(cfg, task)
    rows = []
    for lr in lrs:
        for epochs in epoch_list:
            res = train(replace(cfg, lr=lr, epochs=epochs, save_checkpoints=False), task, console=console, quiet=True)
            rows.append({"lr": lr, "epochs": epochs, "best_epoch": res["best_epoch"], "val_acc": res["best_val_acc"],
                         "test_acc": res["test_acc"], "time_s": res["train_time_s"]})
            if not quiet:
                console.print(f"lr {lr:g}, {epochs} epochs: val {res['best_val_acc']:.2%} (best epoch {res['best_epoch']}),"
                              f" {res['train_time_s']:.0f} s")
    chosen = max(rows, key=lambda r: r["val_acc"])  # first of ties: the smaller lr / fewer epochs
    out = Path(cfg.out)
    from torch_ref.finetune.plots import plot_bars

    names = [f"{r['lr']:g}\n{r['epochs']} ep" for r in rows]
    plot = plot_bars(names, {"validation accuracy": [r["val_acc"] for r in rows],
                             "test accuracy": [r["test_acc"] for r in rows]},
                     out / "grid.png", f"{task.name}: lr x epochs ({cfg.method}, chosen on validation)")
    if not quiet:
        _table(console, "grid (chosen on validation)", ["lr", "epochs", "best epoch", "val acc", "test acc", "time s"],
               [[f"{r['lr']:g}", r["epochs"], r["best_epoch"], r["val_acc"], r["test_acc"], r["time_s"]] for r in rows])
        console.print(f"chosen: lr {chosen['lr']:g}, {chosen['epochs']} epochs -> test accuracy "
                      f"[bold]{chosen['test_acc']:.2%}[/]")
    return _finish(out, {"study": "grid", "rows": rows, "chosen": chosen, "plots": [str(plot)]}, console, quiet)


def optimizers(cfg: TrainConfig, console, quiet=False, names=None, lr_given: bool = False,
               task: Task | None = None) -> dict:
    from torch_ref.finetune.plots import plot_curve_sets

    names = names or list(STUDY_OPTIMIZERS)
    task = _load(cfg, task)
    histories, rows = {}, []
    for name in names:
        lr = cfg.lr if lr_given else OPTIMIZER_LR[name]
        res = train(replace(cfg, optimizer=name, lr=lr, save_checkpoints=False), task, console=console, quiet=True)
        histories[f"{name} (lr {lr:g})"] = res["history"]
        rows.append({"optimizer": name, "lr": lr, "val_acc": res["best_val_acc"], "test_acc": res["test_acc"],
                     "final_train_loss": res["history"][-1]["train_loss"], "time_s": res["train_time_s"]})
    out = Path(cfg.out)
    plot = plot_curve_sets(histories, out / "optimizers.png", f"{task.name}: optimizers ({cfg.method})",
                           metrics=("train_loss", "val_loss", "val_acc"))
    if not quiet:
        _table(console, "optimizers", ["optimizer", "lr", "val acc", "test acc", "final train loss", "time s"],
               [[r["optimizer"], f"{r['lr']:g}", r["val_acc"], r["test_acc"], r["final_train_loss"], r["time_s"]]
                for r in rows])
    return _finish(out, {"study": "optimizers", "rows": rows, "histories": histories, "plots": [str(plot)]},
                   console, quiet)


def pretrained_vs_scratch(cfg: TrainConfig, console, quiet=False, task: Task | None = None) -> dict:
    from torch_ref.finetune.plots import plot_curve_sets

    task = _load(cfg, task)
    histories, rows = {}, []
    for label, pretrained in (("pretrained", True), ("from scratch", False)):
        res = train(replace(cfg, pretrained=pretrained, save_checkpoints=False), task, console=console, quiet=True)
        histories[label] = res["history"]
        rows.append({"init": label, "val_acc": res["best_val_acc"], "test_acc": res["test_acc"],
                     "final_train_loss": res["history"][-1]["train_loss"]})
    out = Path(cfg.out)
    plot = plot_curve_sets(histories, out / "pretrained_vs_scratch.png",
                           f"{task.name}: {cfg.model} {cfg.method}, pretrained vs random init",
                           metrics=("train_loss", "val_loss", "val_acc"))
    if not quiet:
        _table(console, f"pretrained vs scratch (majority-class test accuracy {_majority(task):.2%})",
               ["init", "best val acc", "test acc", "final train loss"],
               [[r["init"], r["val_acc"], r["test_acc"], r["final_train_loss"]] for r in rows])
    return _finish(out, {"study": "pretrained-vs-scratch", "rows": rows, "histories": histories,
                         "plots": [str(plot)]}, console, quiet)


def topic_news(cfg: TrainConfig, console, quiet=False, task: Task | None = None) -> dict:
    """brown-topics has no "sports" or "business" label: the interesting part is where a model trained
    on 1960s press / fiction / learned / general prose puts today's news stories."""
    res = train(cfg, task, console=console, quiet=quiet)
    preds = predict(Path(cfg.out) / "best", [t for t, _ in NEWS_TEXTS])
    rows = [{"text": t, "reader_topic": topic, "predicted": p["label"], "probs": p["probs"]}
            for (t, topic), p in zip(NEWS_TEXTS, preds)]
    if not quiet:
        names = list(preds[0]["probs"])
        _table(console, f"four news stories (model test accuracy {res['test_acc']:.2%}, "
                        f"majority {res['majority_test_acc']:.2%})",
               ["story", "a reader says", "predicted", *[f"p({n})" for n in names]],
               [[t[:60] + "...", topic, p["label"], *[p["probs"][n] for n in names]]
                for (t, topic), p in zip(NEWS_TEXTS, preds)])
    return _finish(Path(cfg.out), {"study": "topic-news", "test_acc": res["test_acc"],
                                   "majority_test_acc": res["majority_test_acc"], "predictions": rows,
                                   "plots": [str(Path(cfg.out) / "curves.png")]}, console, quiet)


def run_study(name: str, args, console, quiet: bool = False) -> dict:
    """Dispatch from the CLI: build the config from flags + the study's defaults, run, return results."""
    if name not in STUDY_DEFAULTS:
        raise InputError(f"study: expected one of {', '.join(STUDY_DEFAULTS)}, got {name!r}")
    cfg = study_config(name, args)
    os.makedirs(cfg.out, exist_ok=True)
    lr_given = getattr(args, "lr", None) is not None
    split = lambda text: [s.strip() for s in text.split(",") if s.strip()] if text else None  # noqa: E731
    if name == "overfit":
        return overfit(cfg, console, quiet)
    if name == "batch-size":
        return batch_size(cfg, console, quiet, getattr(args, "memory_budget_gb", None), getattr(args, "max_batch", 1024))
    if name == "grid":
        return grid(cfg, console, quiet, getattr(args, "lrs", None), getattr(args, "epoch_list", None))
    if name == "optimizers":
        opts = split(getattr(args, "optimizers", None))
        if opts and any(o not in OPTIMIZERS for o in opts):
            raise InputError(f"optimizers: expected a comma list from {', '.join(OPTIMIZERS)}, got {args.optimizers!r}")
        return optimizers(cfg, console, quiet, opts, lr_given)
    if name == "methods":
        ms = split(getattr(args, "methods", None))
        if ms and any(m not in METHODS for m in ms):
            raise InputError(f"methods: expected a comma list from {', '.join(METHODS)}, got {args.methods!r}")
        return methods(cfg, console, quiet, ms, lr_given)
    if name == "pretrained-vs-scratch":
        return pretrained_vs_scratch(cfg, console, quiet)
    return topic_news(cfg, console, quiet)
