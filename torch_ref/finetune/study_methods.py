"""`finetune study methods`: full vs head vs prefix vs LoRA. Each method trains (torch), then one
training step on a fixed batch is measured for memory, by torch and by the NumPy engine
(numpy_impl/bert_finetune.py's hand-written backward + numpy_impl/optim.py's AdamW) on the same
weights (the torch model's, converted by numpy_step.numpy_weights):

    fwd, bwd   peak bytes of the forward, and of the backward counted from before the forward (so the
               activations still held count), weights excluded: torch.profiler (CUDA counters on a
               GPU) for torch, tracemalloc for NumPy (memory.py, numpy_step.py)
    RSS        peak resident memory of one whole step (forward, backward, AdamW step making its
               moments) in a fresh process on the CPU (rss.py): what the operating system saw,
               allocator caches, BLAS buffers and all

The NumPy engine runs BERT encoders only; for other models its columns are "-" with a note saying why.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from torch_ref.finetune.config import METHODS, TrainConfig
from torch_ref.finetune.data import Task
from torch_ref.finetune.study_output import finish, majority_acc, print_table, study_task

__all__ = ["methods", "MEMORY_FIELDS"]

# Per row, MiB; None where not measured (the NumPy engine cannot run the model, or rss=False).
MEMORY_FIELDS = ("forward_mib", "backward_mib", "numpy_forward_mib", "numpy_backward_mib", "torch_rss_mib",
                 "numpy_rss_mib")
_MEMORY_COLUMNS = ("torch\nfwd", "torch\nbwd", "numpy\nfwd", "numpy\nbwd", "torch\nRSS", "numpy\nRSS")


def methods(cfg: TrainConfig, console, quiet=False, names=None, lr_given: bool = False, task: Task | None = None,
            rss: bool = True) -> dict:
    """Each method trains with its own default learning rate (unless --lr); then one training step on a
    fixed batch is measured (module docstring). rss=False skips the fresh-process RSS measurements
    (two child processes per method, each loading the model)."""
    import torch

    from torch_ref.finetune.data import make_loader
    from torch_ref.finetune.models import load_tokenizer, resolve_model
    from torch_ref.finetune.train import train

    names = names or list(METHODS)
    task = study_task(cfg, task)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = resolve_model(cfg.model)
    probe = next(iter(make_loader(task.train.take(cfg.batch_size, cfg.seed), load_tokenizer(path), cfg.batch_size,
                                  cfg.max_length, shuffle=False)))
    rows, notes = [], {}
    for name in names:
        run_cfg = replace(cfg, method=name, lr=cfg.lr if lr_given else None, save_checkpoints=False)
        res = train(run_cfg, task, console=console, quiet=True)
        row = {"method": name, "lr": run_cfg.lr, "trainable_params": res["trainable_params"],
               "val_acc": res["best_val_acc"], "test_acc": res["test_acc"], "time_s": res["train_time_s"]}
        row.update(_memory(run_cfg, task.n_classes, path, probe, device, rss, notes))
        rows.append(row)
        if not quiet:
            console.print(f"{name}: test {res['test_acc']:.2%}, {res['trainable_params']:,} trainable, "
                          f"{res['train_time_s']:.0f} s")
    out = Path(cfg.out)
    plot = _plot(rows, out / "methods.png", f"{task.name}: {cfg.model}, batch {cfg.batch_size} x "
                                            f"{cfg.max_length} tokens ({device})")
    if not quiet:
        _print(console, rows, task, notes)
    return finish(out, {"study": "methods", "device": device, "rows": rows, "plots": [str(plot)],
                        "probe_shape": list(probe["input_ids"].shape), **notes}, console, quiet)


def _memory(run_cfg: TrainConfig, n_classes: int, path: str, probe: dict, device: str, rss: bool,
            notes: dict) -> dict:
    """The row's formula count and MiB fields (MEMORY_FIELDS); notes gets numpy_note / rss_how."""
    import torch

    from torch_ref.finetune.memory import training_step_memory
    from torch_ref.finetune.models import build_classifier, expected_trainable
    from torch_ref.finetune.numpy_step import numpy_step_memory, numpy_unsupported

    spec = run_cfg.spec(n_classes)
    model = build_classifier(spec, path).to(device)
    on_device = {k: v.to(device) for k, v in probe.items()}
    mem = training_step_memory(model, on_device, device)
    row = dict.fromkeys(MEMORY_FIELDS)
    row.update(formula_params=expected_trainable(spec, model.config),
               forward_mib=mem["forward_bytes"] / 2**20, backward_mib=mem["backward_bytes"] / 2**20)
    why = numpy_unsupported(model.config)
    if why is None:
        npm = numpy_step_memory(model, probe)
        row.update(numpy_forward_mib=npm["forward_bytes"] / 2**20, numpy_backward_mib=npm["backward_bytes"] / 2**20)
    else:
        notes["numpy_note"] = why
    if rss:
        args = (spec.to_dict(), path, {k: v.cpu().numpy() for k, v in probe.items()}, torch.get_num_threads(),
                run_cfg.lr, run_cfg.weight_decay)
        row.update(_rss(args, why is None, notes))
    return row


def _rss(args: tuple, numpy_runs: bool, notes: dict) -> dict:
    from torch_ref.finetune.numpy_step import numpy_step_setup, torch_step_setup
    from torch_ref.finetune.rss import step_peak_rss

    out = {}
    for field, setup, runs in (("torch_rss_mib", torch_step_setup, True),
                               ("numpy_rss_mib", numpy_step_setup, numpy_runs)):
        if runs:
            measured = step_peak_rss(setup, *args)
            out[field], notes["rss_how"] = measured["mib"], measured["how"]
    return out


def _print(console, rows: list[dict], task: Task, notes: dict) -> None:
    print_table(console, f"methods (majority-class test accuracy {majority_acc(task):.2%})",
                ["method", "lr", "trainable", "formula", "val acc", "test acc", "time s"],
                [[r["method"], f"{r['lr']:g}", f"{r['trainable_params']:,}", f"{r['formula_params']:,}", r["val_acc"],
                  r["test_acc"], r["time_s"]] for r in rows])
    print_table(console, "memory of one training step (MiB)", ["method", *_MEMORY_COLUMNS],
                [[r["method"], *["-" if r[f] is None else f"{r[f]:.1f}" for f in MEMORY_FIELDS]] for r in rows])
    console.print("fwd, bwd: peak above the level before the forward, weights excluded, bwd counting the "
                  "activations still held (torch: torch.profiler or CUDA counters, numpy: tracemalloc). "
                  "RSS: peak resident memory of forward + backward + AdamW step in a fresh CPU process.")
    if "numpy_note" in notes:
        console.print(f"numpy: - = {notes['numpy_note']}")
    if notes.get("rss_how", "").startswith("ru_maxrss"):
        console.print(f"RSS measured by {notes['rss_how']}: /proc/self/clear_refs could not reset the peak")


def _plot(rows: list[dict], path: Path, title: str) -> Path:
    from torch_ref.finetune.plots import plot_bars

    def pair(torch_field, numpy_field):
        return {"torch": [r[torch_field] for r in rows], "numpy": [r[numpy_field] for r in rows]}

    return plot_bars([r["method"] for r in rows],
                     {"test accuracy": [r["test_acc"] for r in rows],
                      "trainable parameters": [r["trainable_params"] for r in rows],
                      "train time (s)": [r["time_s"] for r in rows],
                      "forward peak (MiB)": pair("forward_mib", "numpy_forward_mib"),
                      "backward peak (MiB)": pair("backward_mib", "numpy_backward_mib"),
                      "step peak RSS (MiB)": pair("torch_rss_mib", "numpy_rss_mib")},
                     path, title, log_panels=("trainable parameters",), columns=3)
