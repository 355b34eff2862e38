"""The course's attention experiments (../shared/docs/exercises.md, section I), each a set of small
GPTs trained with the same budget (steps, batch, model size, learning rate) that differ in one
GPTConfig field:

    similarity          dot product | negative squared distance | cosine with a learned temperature
    shared-projections  separate Q, K, V | Q=K | K=V | Q=K=V
    positions           learned | sinusoidal | rotary, trained at block 64, evaluated at 64/128/256
                        (learned positions have no table rows past 64: reported as "n/a")
    post-softmax-mask   causal softmax | softmax over all keys then zero the future: the training
                        loss collapses because the future leaks through the normaliser. The honest
                        test is the loss at the LAST position of each window (no future exists
                        there), and the generated text, where the future is never available.
    nonlinear-qkv       linear Q/K/V | Q/K/V from small MLPs (C -> 2C -> GELU -> C)
    aft                 softmax attention | AFT-simple (Attention Free Transformer)

Each row: final train loss (mean of the last 20 steps), validation loss and perplexity, seconds.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.gpt_config import GPTConfig
from gptlab.data import CharData
from gptlab.trainer import TrainArgs, estimate_loss, train

EXPERIMENTS: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "similarity": ("Similarity function", [
        ("dot", {}), ("neg_sq_dist", {"similarity": "neg_sq_dist"}), ("cosine", {"similarity": "cosine"})]),
    "shared-projections": ("Shared projections", [
        ("separate Q,K,V", {}), ("Q=K", {"share_qkv": "qk"}), ("K=V", {"share_qkv": "kv"}),
        ("Q=K=V", {"share_qkv": "qkv"})]),
    "positions": ("Positions (trained at block 64)", [
        ("learned", {}), ("sinusoidal", {"positions": "sinusoidal"}), ("rope", {"positions": "rope"})]),
    "post-softmax-mask": ("Masking before vs after the softmax", [
        ("mask then softmax", {}), ("softmax then mask (leaks)", {"post_softmax_mask": True})]),
    "nonlinear-qkv": ("Linear vs MLP Q/K/V", [("linear", {}), ("MLP", {"qkv_mlp": True})]),
    "aft": ("Attention vs AFT-simple", [("softmax attention", {}), ("AFT-simple", {"attention": "aft_simple"})]),
}
EVAL_LENGTHS = (64, 128, 256)


@dataclass
class Budget:
    backend: str = "torch"
    steps: int = 1000
    batch_size: int = 16
    block_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    lr: float = 3e-3
    eval_batches: int = 10
    seed: int = 0


@dataclass
class Row:
    experiment: str
    variant: str
    train_loss: float
    val_loss: float
    val_ppl: float
    seconds: float
    extra: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)


def _config(budget: Budget, vocab: int, overrides: dict) -> GPTConfig:
    return GPTConfig(vocab_size=vocab, block_size=budget.block_size, n_layer=budget.n_layer, n_head=budget.n_head,
                     n_embd=budget.n_embd, **overrides)


def run_variant(experiment: str, variant: str, overrides: dict, budget: Budget, data: CharData,
                progress: bool = True, cache: dict | None = None) -> Row:
    """Train one variant with the budget and measure it (a cache shares the baseline between experiments)."""
    config = _config(budget, data.tokenizer.vocab_size, overrides)
    key = (budget.backend, config)
    if cache is not None and key in cache:
        trained = cache[key]
    else:
        args = TrainArgs(backend=budget.backend, steps=budget.steps, batch_size=budget.batch_size, lr=budget.lr,
                         min_lr=budget.lr / 10, warmup=max(1, budget.steps // 10),
                         eval_interval=max(1, budget.steps // 5), eval_batches=budget.eval_batches,
                         ckpt_interval=10**9, seed=budget.seed)
        res, backend = train(args, config, data, out=None, progress=progress)
        trained = (res, backend)
        if cache is not None:
            cache[key] = trained
    res, backend = trained
    extra = {}
    if experiment == "positions":
        for L in EVAL_LENGTHS:
            if config.positions == "learned" and L > config.block_size:
                extra[f"val@{L}"] = None  # no learned rows past the training block
            else:
                extra[f"val@{L}"] = estimate_loss(backend, data.val, config, max(1, budget.batch_size // (L // 64 or 1)),
                                                  budget.eval_batches, block_size=L)
    if experiment == "post-softmax-mask":
        extra["val_last_position"] = last_position_loss(backend, data, config, budget)
        from gptlab.sample import generate
        extra["sample"] = generate(backend.logits, config.block_size, data.tokenizer, "It is a truth", 160,
                                   temperature=0.8, seed=budget.seed)
    return Row(experiment, variant, res.train_loss, res.val_loss, math.exp(res.val_loss), res.seconds, extra,
               res.history)


def last_position_loss(backend, data: CharData, config: GPTConfig, budget: Budget) -> float:
    """Validation loss counted only at the last position of each window, where the input holds no
    future character: a leaky model cannot cheat there (targets elsewhere are ignored, -100)."""
    from gptlab.data import get_batch
    from gptlab.trainer import VAL_SEED
    losses = []
    for i in range(budget.eval_batches * 4):
        x, y = get_batch(data.val, budget.batch_size, config.block_size, VAL_SEED, i)
        y = np.where(np.arange(y.shape[1]) == y.shape[1] - 1, y, -100)
        losses.append(backend.loss(x, y))
    return float(np.mean(losses))


def run_experiment(name: str, budget: Budget, data: CharData, progress: bool = True, cache: dict | None = None) -> list[Row]:
    _, variants = EXPERIMENTS[name]
    return [run_variant(name, label, overrides, budget, data, progress, cache) for label, overrides in variants]


def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def row_cells(r: Row) -> list[str]:
    cells = [r.experiment, r.variant, _fmt(r.train_loss), _fmt(r.val_loss), _fmt(r.val_ppl, 2), f"{r.seconds:.0f}"]
    notes = []
    for L in EVAL_LENGTHS:
        if f"val@{L}" in r.extra:
            notes.append(f"val@{L} {_fmt(r.extra[f'val@{L}'])}")
    if "val_last_position" in r.extra:
        notes.append(f"val, last position only {_fmt(r.extra['val_last_position'])}")
    return cells + ["; ".join(notes)]


HEADERS = ["experiment", "variant", "train loss", "val loss", "val ppl", "time (s)", "notes"]


def save_plot(name: str, rows: list[Row], out: Path) -> Path:
    from gptlab.plots import plot_loss_curves
    path = out / f"{name}.png"
    plot_loss_curves({r.variant: r.history for r in rows}, path, title=EXPERIMENTS[name][0])
    return path


def write_report(rows: list[Row], budget: Budget, out: Path, plots: dict[str, Path]) -> Path:
    """report.md: the budget, one table of every row, each experiment's plot, the leaky model's text."""
    from common.io import atomic_write_text
    lines = ["# Attention experiments (exercises.md, section I)", "",
             f"Backend {budget.backend}; every variant: {budget.steps} AdamW steps, batch {budget.batch_size} x "
             f"block {budget.block_size}, {budget.n_layer} layers, {budget.n_head} heads, n_embd {budget.n_embd}, "
             f"lr {budget.lr} (cosine, 10% warmup). Losses in nats/char on Jane Austen (validation: the last 10%).", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    lines.append("")
    lines.append("Learned positions have no table rows past the training block (64), so their loss at 128 and 256 "
                 "is not defined (n/a); sinusoidal and rotary positions are evaluated on longer windows as they are.")
    for name, path in plots.items():
        lines += ["", f"## {EXPERIMENTS[name][0]}", "", f"![{name}]({path.name})"]
    for r in rows:
        if "sample" in r.extra:
            lines += ["", f"Generated text, {r.variant}:", "", "```", r.extra["sample"], "```"]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def run_experiments_cli(args) -> int:
    from rich.table import Table

    from common.console import console, print_json
    from common.io import atomic_write_json
    from gptlab.data import load_char_data

    steps = args.steps or (200 if args.backend == "numpy" else 1000)
    if args.backend == "torch" and args.threads:
        import torch
        torch.set_num_threads(args.threads)  # tiny matrices: extra threads mostly wait on each other
    budget = Budget(backend=args.backend, steps=steps, batch_size=args.batch_size, block_size=args.block_size,
                    n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, lr=args.lr)
    data = load_char_data(args.limit_chars)
    out = Path(args.out)
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    rows, plots, cache = [], {}, {}
    t0 = time.perf_counter()
    for name in names:
        if not args.json:
            console.print(f"[bold]{EXPERIMENTS[name][0]}[/] ({budget.backend}, {budget.steps} steps per variant)")
        got = run_experiment(name, budget, data, progress=not args.json, cache=cache)
        rows += got
        plots[name] = save_plot(name, got, out)
    atomic_write_json(out / f"{args.name}.json", [{**{k: v for k, v in r.__dict__.items() if k != "history"}} for r in rows])
    if args.json:
        print_json([{k: v for k, v in r.__dict__.items() if k != "history"} for r in rows])
    else:
        table = Table(title=f"attention experiments, {budget.backend}, {time.perf_counter() - t0:.0f} s")
        for h in HEADERS:
            table.add_column(h)
        for r in rows:
            table.add_row(*row_cells(r))
        console.print(table)
        for r in rows:
            if "sample" in r.extra:
                console.print(f"[bold]{r.variant}[/] generates:")
                console.print(r.extra["sample"], markup=False, highlight=False)
        console.print("plots: " + ", ".join(str(p) for p in plots.values()))
    if args.report:
        path = write_report(rows, budget, out, plots)
        if not args.json:
            console.print(f"report: {path}")
    return 0
