"""The fine-tuning loop, written out: no Trainer, every step visible.

    for epoch:                                   (data order fixed by (seed, epoch): resumable)
        for batch in train (dynamic padding):
            logits = model(batch); loss = cross_entropy(logits, labels)
            backward; clip the global gradient norm; optimizer step; learning-rate schedule step
        validation loss and accuracy under torch.no_grad
        keep the best checkpoint by validation accuracy; save the "last" state for --resume
    reload the best checkpoint and evaluate it once on test

It runs through `accelerate`, so the same code trains on CPU (float32), one GPU (bf16 autocast) or
several processes (`accelerate launch --num_processes P cli.py finetune train ...`): each process takes
its slice of the same global batch, DistributedDataParallel averages the gradients, and the run takes
the same steps as one process (distributed.py says how). Only the main process prints and writes;
checkpoints (checkpoints.py) are folders written beside their target and renamed into place, so a
crash never leaves half a checkpoint.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.checks import InputError
from triptych.common.io import atomic_write_json
from torch_ref.finetune.checkpoints import (
    _NOT_SETTINGS, _existing_dir, checkpoint_dir, load_checkpoint, predict, read_run, run_settings, save_checkpoint,
    write_run_file,
)
from torch_ref.finetune.checkpoints import _replace_dir  # noqa: F401  (its home before checkpoints.py)
from torch_ref.finetune.config import OPTIMIZERS, TrainConfig
from torch_ref.finetune.data import Task, dataset_summary, load_task, make_loader
from torch_ref.finetune.distributed import forget_other_precision, reduce_sums, rng_states, set_rng_states
from torch_ref.finetune.models import build_classifier, count_total, count_trainable, load_tokenizer, resolve_model

__all__ = [
    "OPTIMIZERS", "TrainConfig", "train", "evaluate", "make_optimizer", "warmup_linear",
    "save_checkpoint", "load_checkpoint", "checkpoint_dir", "read_run", "run_settings", "predict", "print_summary",
]


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.01, momentum: float = 0.9):
    """torch's own optimizers. Weight decay only for AdamW (decoupled); the others as plain SGD-family
    steps, so the comparison is about the update rule."""
    params = [p for p in params if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    raise InputError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")


def warmup_linear(optimizer, warmup_steps: int, total_steps: int):
    """lr multiplier: step/warmup while warming up, then a straight line down to 0 at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _losses(model, batch, device):
    """Per-example weighted cross-entropy (B,), weighted correct predictions (B,) and weights (B,)
    of one process's slice of a batch (weight 0 marks a padding copy: distributed.py)."""
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).float()
    w = batch["weight"]
    losses = F.cross_entropy(logits, batch["labels"], reduction="none") * w
    return losses, (logits.argmax(-1) == batch["labels"]).float() * w, w


@torch.no_grad()
def evaluate(model, loader, accelerator) -> dict:
    """Mean cross-entropy and accuracy over a loader (every example once, summed over processes)."""
    model.eval()
    loss_sum, count, correct = torch.zeros((), dtype=torch.float64), 0.0, 0.0
    for batch in loader:
        losses, right, w = _losses(model, batch, accelerator.device)
        loss_sum += losses.sum().double().cpu()
        count += float(w.sum())
        correct += float(right.sum())
    total = reduce_sums(accelerator, [loss_sum, torch.tensor(count), torch.tensor(correct)]).tolist()
    return {"loss": total[0] / total[1], "acc": total[2] / total[1]}


# ---------------------------------------------------------------------------------------------------
# The run


def print_summary(task: Task, console) -> float:
    """Dataset sizes, class balance and the majority-class accuracy; returns the test baseline."""
    from rich.table import Table

    rows = dataset_summary(task)
    table = Table(title=f"dataset {task.name}" + (f" ({task.notes})" if task.notes else ""))
    table.add_column("split")
    table.add_column("examples", justify="right")
    for name in task.label_names:
        table.add_column(name, justify="right")
    table.add_column("majority acc", justify="right")
    for r in rows:
        n = max(1, r["size"])
        table.add_row(r["split"], str(r["size"]), *[f"{c} ({c / n:.0%})" for c in r["counts"].values()],
                      f"{r['majority_acc']:.1%}")
    console.print(table)
    return rows[2]["majority_acc"]


def _progress(console, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=quiet, transient=False)


def _subset(task: Task, cfg: TrainConfig) -> Task:
    return Task(task.name, task.label_names, task.train.take(cfg.train_size, cfg.seed),
                task.val.take(cfg.val_size, cfg.seed), task.test.take(cfg.test_size, cfg.seed), task.notes)


@dataclass
class _Run:
    """What one call of train() works with: built by _build, then stepped, evaluated and saved."""

    cfg: TrainConfig
    accelerator: object
    say: object
    task: Task
    tokenizer: object
    model: torch.nn.Module
    optimizer: object
    scheduler: object
    loaders: dict  # train, val, test: this process's slices
    meta: dict  # what every checkpoint's run.json records
    baseline: float  # majority-class test accuracy
    params: tuple  # (trainable, total)
    history: list = field(default_factory=list)
    best_acc: float = -1.0
    best_state: dict | None = None  # the best weights in memory when no checkpoints are written


def _load_data(cfg: TrainConfig, task: Task | None, accelerator, say, quiet: bool) -> Task:
    task = task or load_task(cfg.task, seed=cfg.seed, data_files=cfg.data_files)
    for split, asked in (("train", cfg.train_size), ("val", cfg.val_size), ("test", cfg.test_size)):
        have = len(getattr(task, split))
        if asked is not None and asked > have and accelerator.is_main_process:  # take() keeps all: say so
            note = f"note: --{split}-size {asked:,} is more than {task.name}'s {have:,} {split} examples; using all"
            if quiet:  # --json: stdout is the JSON alone
                import sys
                sys.stderr.write(note + "\n")
            else:
                say(note, highlight=False, soft_wrap=True)  # one line, never wrapped
    return _subset(task, cfg)


def _build_model(cfg: TrainConfig, spec, path: str):
    model = build_classifier(spec, path)
    limit = getattr(model.config, "max_position_embeddings", 512) - (2 if model.config.model_type == "roberta" else 0)
    extra = cfg.prefix_length if cfg.method == "prefix" else 0
    if cfg.max_length + extra > limit:
        raise InputError(f"max_length: expected max_length{' + prefix_length' if extra else ''} <= {limit} "
                         f"(the model's positions), got {cfg.max_length + extra}")
    return model


def _build(cfg: TrainConfig, task: Task | None, console, quiet: bool) -> _Run:
    """Data, model, optimizer and schedule, the model and optimizer handed to accelerate."""
    from accelerate import Accelerator

    set_seed(cfg.seed)
    gpu = torch.cuda.is_available()
    # Several processes without a GPU (`accelerate launch --multi_gpu` or torchrun on CPUs): accelerate
    # joins them over gloo only when told cpu=True; its --cpu launcher itself starts one process.
    mixed = {"auto": "bf16" if gpu else "no", "fp32": "no", "bf16": "bf16"}[cfg.precision]
    forget_other_precision(mixed)
    accelerator = Accelerator(mixed_precision=mixed, cpu=not gpu and launched_processes() > 1)
    say = console.print if accelerator.is_main_process and not quiet else (lambda *a, **k: None)
    path = resolve_model(cfg.model)  # before the data: a typo in --model should fail in a second
    task = _load_data(cfg, task, accelerator, say, quiet)
    baseline = print_summary(task, console) if not quiet and accelerator.is_main_process else \
        dataset_summary(task)[2]["majority_acc"]
    spec = cfg.spec(task.n_classes)
    tokenizer = load_tokenizer(path)
    model = _build_model(cfg, spec, path)
    params = (count_trainable(model), count_total(model))
    say(f"model {cfg.model} ({model.config.model_type}), method {cfg.method}: "
        f"[bold]{params[0]:,}[/] trainable of {params[1]:,} parameters ({params[0] / params[1]:.2%}); "
        f"device {accelerator.device}, precision {accelerator.mixed_precision}"
        + (f", {accelerator.num_processes} processes" if accelerator.num_processes > 1 else ""))
    # Our loaders, not accelerate's: each process takes its slice of the same global batches.
    shard = dict(num_processes=accelerator.num_processes, process_index=accelerator.process_index)
    loaders = {"train": make_loader(task.train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True,
                                    seed=cfg.seed, **shard),
               "val": make_loader(task.val, tokenizer, 2 * cfg.batch_size, cfg.max_length, shuffle=False, **shard),
               "test": make_loader(task.test, tokenizer, 2 * cfg.batch_size, cfg.max_length, shuffle=False, **shard)}
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum)
    total_steps = cfg.epochs * len(loaders["train"])
    # The schedule stays ours too: accelerate's wrapper would step it once per process.
    scheduler = warmup_linear(optimizer, max(1, int(cfg.warmup * total_steps)), total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    meta = {"task": task.name, "label_names": task.label_names, "is_pair": task.is_pair,
            "max_length": cfg.max_length, "spec": spec.to_dict(), "config": asdict(cfg)}
    return _Run(cfg, accelerator, say, task, tokenizer, model, optimizer, scheduler, loaders, meta, baseline, params)


def _check_same_settings(cfg: TrainConfig, saved: dict, out: Path) -> None:
    """--epochs may grow (extending the run) and out may move with its folder; the rest must match."""
    changed = [k for k, v in run_settings(cfg).items() if k != "epochs" and k in saved and saved[k] != v]
    if changed:
        raise InputError(f"resume: expected the settings of the run in {out} (see its run.json), "
                         f"got different {', '.join(changed)}")


def _resume(run: _Run) -> int:
    """Restore the last finished epoch on every process; returns the epoch to start from."""
    cfg, out = run.cfg, Path(run.cfg.out)
    if cfg.resume and cfg.save_checkpoints:
        _check_same_settings(cfg, read_run(out)["config"], out)
    last = _existing_dir(out / "last") if cfg.resume else None
    if last is None:
        return 1
    from safetensors.torch import load_model

    state = torch.load(last / "trainer.pt", weights_only=False)
    if cfg.epochs < state["epoch"]:
        raise InputError(f"epochs: the run in {out} has already finished {state['epoch']} epochs, got {cfg.epochs}")
    saved = {k: v for k, v in state["config"].items() if k not in (*_NOT_SETTINGS, "epochs")}
    _check_same_settings(cfg, {k: saved.get(k) for k in run_settings(cfg)}, out)
    load_model(run.accelerator.unwrap_model(run.model), str(last / "model.safetensors"))
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.history, run.best_acc = state["history"], state["best_acc"]
    set_rng_states(run.accelerator, state["rng"])
    run.say(f"resumed from {last} after epoch {state['epoch']} (best validation accuracy {run.best_acc:.2%})")
    return state["epoch"] + 1


def _train_step(run: _Run, batch) -> torch.Tensor:
    """One optimizer step on a global batch; returns (loss sum, examples, correct) over all processes."""
    accelerator, model = run.accelerator, run.model
    losses, right, w = _losses(model, batch, accelerator.device)
    sums = reduce_sums(accelerator, [losses.sum(), w.sum(), right.sum()])
    # DDP averages the processes' gradients: scaled by P / N, the average is that of the global mean loss.
    accelerator.backward(losses.sum() * (accelerator.num_processes / float(sums[1])))
    if run.cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(model.parameters(), run.cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return sums


def _train_epoch(run: _Run, epoch: int, console, quiet: bool) -> dict:
    """One pass over the training data, then validation: the epoch's row of the history."""
    run.model.train()
    loader = run.loaders["train"]
    loader.batch_sampler.set_epoch(epoch)  # the batch order of this epoch, the same on every process
    t0 = time.perf_counter()
    totals = torch.zeros(3, dtype=torch.float64)
    with _progress(console, quiet or not run.accelerator.is_main_process) as bar:
        job = bar.add_task(f"epoch {epoch}/{run.cfg.epochs}", total=len(loader), loss="-")
        for batch in loader:
            totals += _train_step(run, batch).cpu()
            bar.update(job, advance=1, loss=f"{float(totals[0] / totals[1]):.4f}")
    train_time = time.perf_counter() - t0
    val = evaluate(run.model, run.loaders["val"], run.accelerator)
    return {"epoch": epoch, "train_loss": float(totals[0] / totals[1]), "train_acc": float(totals[2] / totals[1]),
            "val_loss": val["loss"], "val_acc": val["acc"], "train_time_s": train_time,
            "epoch_time_s": time.perf_counter() - t0, "lr_end": run.scheduler.get_last_lr()[0]}


def _keep(run: _Run, row: dict) -> bool:
    """Save best/ (if validation improved) and last/ from the main process; True if it improved.
    Every process waits until the folders are in place, so none reads a half-renamed one."""
    cfg, accelerator, out, epoch = run.cfg, run.accelerator, Path(run.cfg.out), row["epoch"]
    improved = row["val_acc"] > run.best_acc
    if improved:
        run.best_acc = row["val_acc"]
    rng = rng_states(accelerator) if cfg.save_checkpoints else None  # a collective: every process takes part
    unwrapped = accelerator.unwrap_model(run.model)
    if improved and not cfg.save_checkpoints:
        run.best_state = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and cfg.save_checkpoints:
        if improved:
            save_checkpoint(out / "best", unwrapped, run.tokenizer, {**run.meta, "epoch": epoch, "val_acc": run.best_acc})
        state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "epoch": epoch,
                 "history": run.history, "best_acc": run.best_acc, "rng": rng, "config": asdict(cfg)}
        save_checkpoint(out / "last", unwrapped, run.tokenizer, {**run.meta, "epoch": epoch}, state)
    accelerator.wait_for_everyone()
    return improved


def _test_best(run: _Run) -> dict:
    """Test the best epoch, not the last one: the choice was made on validation only."""
    unwrapped = run.accelerator.unwrap_model(run.model)
    if run.cfg.save_checkpoints:
        from safetensors.torch import load_model

        load_model(unwrapped, str(_existing_dir(Path(run.cfg.out) / "best") / "model.safetensors"))
    elif run.best_state is not None:
        unwrapped.load_state_dict(run.best_state)
    return evaluate(run.model, run.loaders["test"], run.accelerator)


def _finish(run: _Run, test: dict) -> dict:
    """results.json and curves.png (main process), the closing line; returns the results."""
    cfg, task, history, out = run.cfg, run.task, run.history, Path(run.cfg.out)
    best = max(history, key=lambda h: h["val_acc"])
    results = {
        "task": task.name, "model": cfg.model, "method": cfg.method, "config": asdict(cfg),
        "trainable_params": run.params[0], "total_params": run.params[1],
        "sizes": {"train": len(task.train), "val": len(task.val), "test": len(task.test)},
        "majority_test_acc": run.baseline, "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
        "test_loss": test["loss"], "test_acc": test["acc"], "history": history,
        "train_time_s": sum(h["train_time_s"] for h in history),
        "device": str(run.accelerator.device), "precision": run.accelerator.mixed_precision,
        "processes": run.accelerator.num_processes,
    }
    if run.accelerator.is_main_process and cfg.save_checkpoints:
        from torch_ref.finetune.plots import plot_curves

        atomic_write_json(out / "results.json", results)
        plot_curves(history, out / "curves.png", f"{task.name}: {cfg.model} {cfg.method} (test acc {test['acc']:.1%})")
    run.say(f"test (best epoch {best['epoch']}): loss {test['loss']:.4f}, accuracy [bold]{test['acc']:.2%}[/] "
            f"vs majority class {run.baseline:.2%}"
            + (f"; wrote {out}/results.json, curves.png, best/" if cfg.save_checkpoints else ""))
    return results


def epoch_line(row: dict, improved: bool) -> str:
    """The line printed after each epoch (every backend's): train and validation loss and accuracy."""
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%} | "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%} | {row['epoch_time_s']:.0f} s"
            + (" [green]best[/]" if improved else ""))


def train(cfg: TrainConfig, task: Task | None = None, console=None, quiet: bool = False,
          stop_after_epoch: int | None = None) -> dict:
    """Train, keep the best epoch by validation accuracy, test it; returns (and writes) the results.

    task: a ready Task (tests pass small synthetic ones); None loads cfg.task.
    stop_after_epoch: return after that epoch as if interrupted (for testing --resume)."""
    from rich.console import Console

    console = console or Console(quiet=quiet)
    if cfg.resume and cfg.save_checkpoints and read_run(cfg.out) is None:
        raise InputError(f"resume: expected a run folder of `finetune train` (run.json, last/), got {cfg.out!r}; "
                         f"start it without --resume")
    run = _build(cfg, task, console, quiet)
    start = _resume(run)
    if run.accelerator.is_main_process and cfg.save_checkpoints:
        write_run_file(cfg)  # before the first epoch: a resume needs no flags repeated
    for epoch in range(start, cfg.epochs + 1):
        row = _train_epoch(run, epoch, console, quiet)
        run.history.append(row)
        improved = _keep(run, row)
        run.say(epoch_line(row, improved))
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return {"interrupted_after_epoch": epoch, "history": run.history}
    return _finish(run, _test_best(run))


_RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")  # torchrun / accelerate launch, Open MPI, MPICH
_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def launched_processes() -> int:
    """How many processes the launcher started (1 when run directly), from the launchers' variables."""
    return next((int(os.environ[v]) for v in _SIZE_VARS if os.environ.get(v)), 1)


def is_main_process() -> bool:
    """True in the one process that prints: every run of one process, rank 0 of several. Read from the
    launcher's variables, so the CLI can ask before train() has joined the processes."""
    return next((int(os.environ[v]) for v in _RANK_VARS if os.environ.get(v)), 0) == 0
