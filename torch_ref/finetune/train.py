"""The fine-tuning loop, written out: no Trainer, every step visible.

    for epoch:                                   (data order fixed by (seed, epoch): resumable)
        for batch in train (dynamic padding):
            logits = model(batch); loss = cross_entropy(logits, labels)
            backward; clip the global gradient norm; optimizer step; learning-rate schedule step
        validation loss and accuracy under torch.no_grad
        keep the best checkpoint by validation accuracy; save the "last" state for --resume
    reload the best checkpoint and evaluate it once on test

It runs through `accelerate`, so the same code trains on CPU (float32), one GPU (bf16 autocast) or
several (`accelerate launch cli.py finetune train ...`). Checkpoints are folders written beside
their target and renamed into place, so a crash never leaves half a checkpoint.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.checks import InputError
from triptych.common.io import atomic_write_json
from torch_ref.finetune.data import Task, dataset_summary, load_task, make_loader
from torch_ref.finetune.config import OPTIMIZERS, TrainConfig
from torch_ref.finetune.models import (
    ModelSpec, build_classifier, count_total, count_trainable, load_tokenizer, resolve_model,
)

__all__ = [
    "OPTIMIZERS", "TrainConfig", "train", "evaluate", "make_optimizer", "warmup_linear",
    "save_checkpoint", "load_checkpoint", "predict", "print_summary",
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


def _forward(model, batch):
    return model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))


@torch.no_grad()
def evaluate(model, loader, accelerator) -> dict:
    """Mean cross-entropy and accuracy over a loader (every example once, across processes)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for batch in loader:
        logits = _forward(model, batch).float()
        # Per-example values, so gather_for_metrics can drop the copies padded onto the last batch
        # when several processes share the data.
        loss = F.cross_entropy(logits, batch["labels"], reduction="none")
        losses, preds, labels = accelerator.gather_for_metrics((loss, logits.argmax(-1), batch["labels"]))
        total_loss += float(losses.sum())
        correct += int((preds == labels).sum())
        count += int(labels.numel())
    return {"loss": total_loss / count, "acc": correct / count}


# ---------------------------------------------------------------------------------------------------
# Checkpoints: a folder with model.safetensors, run.json and the encoder's config + tokenizer.


def _replace_dir(target: Path, fill) -> None:
    """fill(tmp_dir) writes a folder beside target, then it is renamed into place. The previous one is
    moved aside first and deleted last, so at every moment one complete copy exists."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _existing_dir(target: Path) -> Path | None:
    """The checkpoint folder, or the previous copy if a crash came between the two renames."""
    target = Path(target)
    if (target / "run.json").is_file():
        return target
    old = target.parent / f".{target.name}.old"
    return old if (old / "run.json").is_file() else None


def checkpoint_dir(folder) -> Path:
    """The checkpoint a person means: a best/ or last/ folder itself, or a run folder (what `finetune
    train` prints), whose best/ it is."""
    folder = Path(folder)
    # best/ first: a run folder holds a run.json too (its settings), beside best/ and last/
    found = _existing_dir(folder / "best") or _existing_dir(folder)
    if found is None or not (found / "model.safetensors").is_file():
        raise InputError(f"checkpoint: expected a run folder of `finetune train` or its best/ or last/ "
                         f"(with run.json and model.safetensors), got {str(folder)!r}")
    return found


RUN_FORMAT = "triptych-finetune-run/1"
_NOT_SETTINGS = ("out", "resume", "save_checkpoints")  # where and how this invocation runs, not what


def run_settings(cfg: TrainConfig) -> dict:
    """What out/run.json records: the TrainConfig fields that define the run."""
    return {k: v for k, v in asdict(cfg).items() if k not in _NOT_SETTINGS}


def read_run(out) -> dict | None:
    """The settings of the run in folder `out` ({"config": {...}, "epoch": finished epochs}), or None
    when it holds no run: out/run.json, else (runs written before it existed) last/'s record."""
    out = Path(out)
    last = _existing_dir(out / "last")
    done = json.loads((last / "run.json").read_text()).get("epoch", 0) if last is not None else 0
    if (out / "run.json").is_file():
        try:
            return {"config": json.loads((out / "run.json").read_text())["config"], "epoch": done}
        except (ValueError, KeyError):
            pass  # damaged: last/ holds the same settings
    if last is not None:
        config = json.loads((last / "run.json").read_text())["config"]
        return {"config": {k: v for k, v in config.items() if k not in _NOT_SETTINGS}, "epoch": done}
    return None


def _write_run_file(cfg: TrainConfig) -> None:
    """out/run.json, atomically: written when a run starts, rewritten only when a resume extends --epochs."""
    path = Path(cfg.out) / "run.json"
    run = {"format": RUN_FORMAT, "config": run_settings(cfg)}
    try:
        if json.loads(path.read_text()) == json.loads(json.dumps(run)):
            return
    except (OSError, ValueError):
        pass  # absent or unreadable: written below
    atomic_write_json(path, run)


def save_checkpoint(folder, model, tokenizer, meta: dict, trainer_state: dict | None = None) -> None:
    from safetensors.torch import save_model

    def fill(tmp: Path):
        save_model(model, str(tmp / "model.safetensors"))
        model.config.save_pretrained(tmp / "encoder")
        tokenizer.save_pretrained(tmp / "encoder")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "run.json").write_text(json.dumps(meta, indent=2) + "\n")

    _replace_dir(Path(folder), fill)


def load_checkpoint(folder):
    """(model, tokenizer, meta) rebuilt from a checkpoint folder alone (no base weights needed); a run
    folder stands for its best/."""
    from safetensors.torch import load_model

    found = checkpoint_dir(folder)
    meta = json.loads((found / "run.json").read_text())
    spec = ModelSpec(**{**meta["spec"], "pretrained": False})
    model = build_classifier(spec, path=str(found / "encoder"))
    load_model(model, str(found / "model.safetensors"))
    model.eval()
    return model, load_tokenizer(str(found / "encoder")), meta


@torch.no_grad()
def predict(folder, texts: list[str], text_pairs: list[str] | None = None, batch_size: int = 32) -> list[dict]:
    """Label and class probabilities for each text (or text pair) from a saved checkpoint."""
    model, tokenizer, meta = load_checkpoint(folder)
    names = meta["label_names"]
    if bool(meta.get("is_pair")) != (text_pairs is not None):
        want = "pairs (--pair B for each text)" if meta.get("is_pair") else "single texts"
        raise InputError(f"texts: this checkpoint ({meta['task']}) expects {want}")
    out = []
    for i in range(0, len(texts), batch_size):
        a = texts[i:i + batch_size]
        b = None if text_pairs is None else text_pairs[i:i + batch_size]
        enc = tokenizer(a, b, truncation=True, max_length=meta["max_length"], padding=True, return_tensors="pt")
        probs = torch.softmax(model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")).float(), -1)
        for row in probs:
            out.append({"label": names[int(row.argmax())], "probs": {n: float(p) for n, p in zip(names, row)}})
    return out


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


def train(cfg: TrainConfig, task: Task | None = None, console=None, quiet: bool = False,
          stop_after_epoch: int | None = None) -> dict:
    """Train, keep the best epoch by validation accuracy, test it; returns (and writes) the results.

    task: a ready Task (tests pass small synthetic ones); None loads cfg.task.
    stop_after_epoch: return after that epoch as if interrupted (for testing --resume)."""
    from accelerate import Accelerator
    from rich.console import Console

    console = console or Console(quiet=quiet)
    out = Path(cfg.out)
    if cfg.resume and cfg.save_checkpoints and read_run(out) is None:
        raise InputError(f"resume: expected a run folder of `finetune train` (run.json, last/), got {str(out)!r}; "
                         f"start it without --resume")
    set_seed(cfg.seed)
    accelerator = Accelerator(mixed_precision="bf16" if torch.cuda.is_available() else "no")
    say = console.print if accelerator.is_main_process and not quiet else (lambda *a, **k: None)

    path = resolve_model(cfg.model)  # before the data: a typo in --model should fail in a second
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
    task = _subset(task, cfg)
    baseline = print_summary(task, console) if not quiet and accelerator.is_main_process else \
        dataset_summary(task)[2]["majority_acc"]

    spec = cfg.spec(task.n_classes)
    tokenizer = load_tokenizer(path)
    model = build_classifier(spec, path)
    limit = getattr(model.config, "max_position_embeddings", 512) - (2 if model.config.model_type == "roberta" else 0)
    extra = cfg.prefix_length if cfg.method == "prefix" else 0
    if cfg.max_length + extra > limit:
        raise InputError(f"max_length: expected max_length{' + prefix_length' if extra else ''} <= {limit} "
                         f"(the model's positions), got {cfg.max_length + extra}")
    n_train, n_total = count_trainable(model), count_total(model)
    say(f"model {cfg.model} ({model.config.model_type}), method {cfg.method}: "
        f"[bold]{n_train:,}[/] trainable of {n_total:,} parameters ({n_train / n_total:.2%}); "
        f"device {accelerator.device}, precision {accelerator.mixed_precision}")

    train_loader = make_loader(task.train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=cfg.seed)
    val_loader = make_loader(task.val, tokenizer, 2 * cfg.batch_size, cfg.max_length, shuffle=False)
    test_loader = make_loader(task.test, tokenizer, 2 * cfg.batch_size, cfg.max_length, shuffle=False)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum)
    total_steps = cfg.epochs * len(train_loader)
    scheduler = warmup_linear(optimizer, max(1, int(cfg.warmup * total_steps)), total_steps)
    model, optimizer, train_loader, val_loader, test_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, test_loader, scheduler)

    meta = {"task": task.name, "label_names": task.label_names, "is_pair": task.is_pair,
            "max_length": cfg.max_length, "spec": spec.to_dict(), "config": asdict(cfg)}
    history: list[dict] = []
    best_acc, start_epoch = -1.0, 1
    if cfg.resume and cfg.save_checkpoints:
        saved = read_run(out)["config"]
        changed = [k for k, v in run_settings(cfg).items() if k != "epochs" and k in saved and saved[k] != v]
        if changed:
            raise InputError(f"resume: expected the settings of the run in {out} (see its run.json), "
                             f"got different {', '.join(changed)}")
    if cfg.resume and _existing_dir(out / "last") is not None:
        from safetensors.torch import load_model

        last = _existing_dir(out / "last")
        state = torch.load(last / "trainer.pt", weights_only=False)
        # --epochs may grow (extending the run); out may move with its folder
        saved = {k: v for k, v in state["config"].items() if k not in (*_NOT_SETTINGS, "epochs")}
        changed = [k for k, v in run_settings(cfg).items() if k != "epochs" and saved.get(k) != v]
        if cfg.epochs < state["epoch"]:
            raise InputError(f"epochs: the run in {out} has already finished {state['epoch']} epochs, got {cfg.epochs}")
        if changed:
            raise InputError(f"resume: expected the settings of the run in {out} (see its run.json), "
                             f"got different {', '.join(changed)}")
        load_model(accelerator.unwrap_model(model), str(last / "model.safetensors"))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_acc, start_epoch = state["history"], state["best_acc"], state["epoch"] + 1
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        say(f"resumed from {last} after epoch {state['epoch']} (best validation accuracy {best_acc:.2%})")

    if accelerator.is_main_process and cfg.save_checkpoints:
        _write_run_file(cfg)  # before the first epoch: a resume needs no flags repeated

    for epoch in range(start_epoch, cfg.epochs + 1):
        model.train()
        train_loader.set_epoch(epoch)  # accelerate passes it to our sampler: the batch order of this epoch
        inner = getattr(train_loader.batch_sampler, "batch_sampler", None)  # several processes: sharded
        if inner is not None and hasattr(inner, "set_epoch"):
            inner.set_epoch(epoch)
        t0 = time.perf_counter()
        run_loss, correct, seen = 0.0, 0, 0
        with _progress(console, quiet or not accelerator.is_main_process) as bar:
            job = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=len(train_loader), loss="-")
            for batch in train_loader:
                logits = _forward(model, batch).float()
                loss = F.cross_entropy(logits, batch["labels"])
                accelerator.backward(loss)
                if cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                n = batch["labels"].numel()
                run_loss += float(loss.detach()) * n
                correct += int((logits.argmax(-1) == batch["labels"]).sum())
                seen += n
                bar.update(job, advance=1, loss=f"{run_loss / seen:.4f}")
        train_time = time.perf_counter() - t0
        val = evaluate(model, val_loader, accelerator)
        row = {"epoch": epoch, "train_loss": run_loss / seen, "train_acc": correct / seen,
               "val_loss": val["loss"], "val_acc": val["acc"], "train_time_s": train_time,
               "epoch_time_s": time.perf_counter() - t0, "lr_end": scheduler.get_last_lr()[0]}
        history.append(row)
        improved = val["acc"] > best_acc
        say(f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%} | "
            f"val loss {val['loss']:.4f} acc {val['acc']:.2%} | {row['epoch_time_s']:.0f} s"
            + (" [green]best[/]" if improved else ""))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            if improved:
                best_acc = val["acc"]
                if cfg.save_checkpoints:
                    save_checkpoint(out / "best", unwrapped, tokenizer, {**meta, "epoch": epoch, "val_acc": best_acc})
                else:
                    best_state = {k: v.detach().clone() for k, v in unwrapped.state_dict().items()}
            if cfg.save_checkpoints:
                rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                         "history": history, "best_acc": best_acc, "rng": rng, "config": asdict(cfg)}
                save_checkpoint(out / "last", unwrapped, tokenizer, {**meta, "epoch": epoch}, state)
        best_acc = max(best_acc, val["acc"])
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return {"interrupted_after_epoch": epoch, "history": history}

    # Test the best epoch, not the last one: the choice was made on validation only.
    unwrapped = accelerator.unwrap_model(model)
    if cfg.save_checkpoints:
        from safetensors.torch import load_model

        load_model(unwrapped, str(_existing_dir(out / "best") / "model.safetensors"))
    elif history:
        unwrapped.load_state_dict(best_state)
    test = evaluate(model, test_loader, accelerator)
    best = max(history, key=lambda h: h["val_acc"])
    results = {
        "task": task.name, "model": cfg.model, "method": cfg.method, "config": asdict(cfg),
        "trainable_params": n_train, "total_params": n_total,
        "sizes": {"train": len(task.train), "val": len(task.val), "test": len(task.test)},
        "majority_test_acc": baseline, "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
        "test_loss": test["loss"], "test_acc": test["acc"], "history": history,
        "train_time_s": sum(h["train_time_s"] for h in history),
        "device": str(accelerator.device), "precision": accelerator.mixed_precision,
    }
    if accelerator.is_main_process and cfg.save_checkpoints:
        from torch_ref.finetune.plots import plot_curves

        atomic_write_json(out / "results.json", results)
        plot_curves(history, out / "curves.png", f"{task.name}: {cfg.model} {cfg.method} (test acc {test['acc']:.1%})")
    say(f"test (best epoch {best['epoch']}): loss {test['loss']:.4f}, accuracy [bold]{test['acc']:.2%}[/] "
        f"vs majority class {baseline:.2%}" + (f"; wrote {out}/results.json, curves.png, best/" if cfg.save_checkpoints else ""))
    return results

