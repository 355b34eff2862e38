"""The course's attention experiments (docs/course.md, section I), each a set of small
GPTs trained with the same budget (steps, batch, model size, learning rate) that differ in one
GPTConfig field:

    similarity          dot product | negative squared distance | cosine with a learned temperature
    shared-projections  separate Q, K, V | Q=K | K=V | Q=K=V
    positions           "train short, test long" (Press et al. 2022): learned | sinusoidal (token
                        embeddings * sqrt(n_embd), without which the fixed table drowns them) |
                        rotary | ALiBi | none, trained at block B (64) and evaluated on held-out
                        windows of B, 2B, 4B and 8B: the loss over the whole window and over its
                        positions >= B only, which training never saw (learned positions have no
                        table rows past B: "n/a"). Plot: loss against eval length, one line each.
    post-softmax-mask   causal softmax | softmax over all keys then zero the future: the training
                        loss collapses because the future leaks through the normaliser. The honest
                        test is the loss at the LAST position of each window (no future exists
                        there), and the generated text, where the future is never available.
    nonlinear-qkv       linear Q/K/V | Q/K/V from small MLPs (C -> 2C -> GELU -> C)
    aft                 softmax attention | AFT-simple (Attention Free Transformer)

Each row: final train loss (mean of the last 20 steps), validation loss and perplexity, and the
seconds its own run took (training and its periodic validation, as its checkpoint records them; a
variant shared with an earlier experiment, the baseline, is trained once and says so).
With a run folder each variant checkpoints while it trains and saves its row when done (atomic
writes), so `--resume` continues an interrupted study where it stopped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from triptych.common.gpt_config import GPTConfig
from triptych.training.data import CharData
from triptych.training.trainer import TrainArgs, estimate_loss, train

EXPERIMENTS: dict[str, tuple[str, list[tuple[str, dict]]]] = {
    "similarity": ("Similarity function", [
        ("dot", {}), ("neg_sq_dist", {"similarity": "neg_sq_dist"}), ("cosine", {"similarity": "cosine"})]),
    "shared-projections": ("Shared projections", [
        ("separate Q,K,V", {}), ("Q=K", {"share_qkv": "qk"}), ("K=V", {"share_qkv": "kv"}),
        ("Q=K=V", {"share_qkv": "qkv"})]),
    "positions": ("Positions: train short, test long", [
        ("learned", {}), ("sinusoidal x sqrt(C)", {"positions": "sinusoidal", "scale_embeddings": True}),
        ("rope", {"positions": "rope"}), ("alibi", {"positions": "alibi"}), ("none", {"positions": "none"})]),
    "post-softmax-mask": ("Masking before vs after the softmax", [
        ("mask then softmax", {}), ("softmax then mask (leaks)", {"post_softmax_mask": True})]),
    "nonlinear-qkv": ("Linear vs MLP Q/K/V", [("linear", {}), ("MLP", {"qkv_mlp": True})]),
    "aft": ("Attention vs AFT-simple", [("softmax attention", {}), ("AFT-simple", {"attention": "aft_simple"})]),
}
EVAL_FACTORS = (1, 2, 4, 8)  # positions: evaluated at these multiples of the training block
EVAL_TOKENS_PER_BATCH = 4  # positions: every length scores the same eval_batches * 4 * batch * block characters


def eval_lengths(block_size: int) -> list[int]:
    return [f * block_size for f in EVAL_FACTORS]


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


class Interrupted(Exception):
    """Ctrl-C while a variant trained: its checkpoint is saved, and `--resume` continues from it."""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def _train_variant(config: GPTConfig, budget: Budget, data: CharData, progress: bool, run_dir: Path | None,
                   resume: bool):
    """Train with the budget. With run_dir: checkpoint every fifth of the run, and with `resume`
    continue from a checkpoint of the same budget and config (refused if they differ)."""
    from triptych.common.checks import InputError
    from triptych.common.io import atomic_write_json

    args = TrainArgs(backend=budget.backend, steps=budget.steps, batch_size=budget.batch_size, lr=budget.lr,
                     min_lr=budget.lr / 10, warmup=max(1, budget.steps // 10),
                     eval_interval=max(1, budget.steps // 5), eval_batches=budget.eval_batches,
                     ckpt_interval=max(1, budget.steps // 5) if run_dir is not None else 10**9, seed=budget.seed)
    again = False
    if run_dir is not None:
        stamp = {"budget": budget.__dict__, "config": config.to_dict()}
        stamp_path = run_dir / "budget.json"
        if resume and (run_dir / "ckpt.npz").is_file():
            import json
            if json.loads(stamp_path.read_text()) != json.loads(json.dumps(stamp)):
                raise InputError(f"resume: the run in {run_dir} was trained with another budget or config; "
                                 "drop --resume or choose another --out")
            again = True
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(stamp_path, stamp)
    res, backend = train(args, config, data, out=run_dir, resume=again, progress=progress)
    if res.interrupted:
        raise Interrupted(f"interrupted at step {res.step} of {budget.steps}" +
                          (f"; checkpoint in {run_dir}, continue with --resume" if run_dir is not None else ""))
    if res.val_loss is None:  # resumed from a checkpoint that had already finished: nothing was trained
        res.val_loss = estimate_loss(backend, data.val, config, budget.batch_size, budget.eval_batches)
    return res, backend


def long_window_losses(backend, data: np.ndarray, budget: Budget, lengths: list[int],
                       draw_length: int | None = None) -> dict[int, tuple]:
    """Held-out loss at each eval length on THE SAME characters: windows of the longest length are
    drawn once and cut into non-overlapping windows of each shorter one, so the lengths differ only
    in how much context each character gets (and how far past the training block it sits), not in
    which text is scored. Per length: the mean loss over every position, and over the positions
    >= the training block only (the ones a model trained at block B never saw; None at L = B).
    Per-position losses come from the logits in float64. draw_length (a multiple of every length,
    default the longest) is the length drawn: learned positions, scored at B only, still see the
    text the others are scored on.

    Shapes: -> {L: (float, float | None)}
    """
    from triptych.training.data import get_batch
    from triptych.training.trainer import VAL_SEED
    longest, B = draw_length or max(lengths), budget.block_size
    per_batch = max(1, budget.batch_size * B // longest)  # characters per draw as in one training batch
    sums = {L: [0.0, 0.0, 0, 0] for L in lengths}  # whole sum, beyond sum, whole count, beyond count
    for i in range(budget.eval_batches * EVAL_TOKENS_PER_BATCH):
        x, y = get_batch(data, per_batch, longest, VAL_SEED, i)  # (per_batch, longest)
        for L in lengths:
            xs, ys = x.reshape(-1, L), y.reshape(-1, L)  # each row cut into longest // L windows
            logits = np.asarray(backend.logits(xs), dtype=np.float64)  # (n, L, V)
            shifted = logits - logits.max(-1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            nll = -np.take_along_axis(logp, ys[..., None], -1)[..., 0]  # (n, L)
            sums[L][0] += nll.sum()
            sums[L][2] += nll.size
            sums[L][1] += nll[:, B:].sum()
            sums[L][3] += nll[:, B:].size
    return {L: (w / nw, b / nb if nb else None) for L, (w, b, nw, nb) in sums.items()}


def run_variant(experiment: str, variant: str, overrides: dict, budget: Budget, data: CharData,
                progress: bool = True, cache: dict | None = None, run_dir: Path | None = None,
                resume: bool = False) -> Row:
    """Train one variant with the budget and measure it (a cache, (backend, config) -> (TrainResult,
    backend, the experiment it was trained for), shares the baseline between experiments; run_dir keeps
    its checkpoint and, once measured, its row: `resume` reuses both)."""
    from triptych.common.io import atomic_write_json

    config = _config(budget, data.tokenizer.vocab_size, overrides)
    row_path = run_dir / "row.json" if run_dir is not None else None
    if resume and row_path is not None and row_path.is_file():
        import json
        saved = json.loads(row_path.read_text())
        if saved.pop("stamp") == json.loads(json.dumps({"budget": budget.__dict__, "config": config.to_dict()})):
            return Row(**saved)
    key = (budget.backend, config)
    extra = {}
    if cache is not None and key in cache:
        res, backend, first = cache[key]
        extra["trained_for"] = first  # one run, shown again: its time is not spent twice
    else:
        res, backend = _train_variant(config, budget, data, progress, run_dir, resume)
        if cache is not None:
            cache[key] = (res, backend, experiment)
    if experiment == "positions":
        lengths = eval_lengths(budget.block_size)
        # learned positions have no table rows past the training block
        usable = [L for L in lengths if config.positions != "learned" or L <= config.block_size]
        got = long_window_losses(backend, data.val, budget, usable, draw_length=lengths[-1])
        for L in lengths:
            extra[f"val@{L}"], beyond = got.get(L, (None, None))
            if L > budget.block_size:
                extra[f"beyond@{L}"] = beyond
    if experiment == "post-softmax-mask":
        extra["val_last_position"] = last_position_loss(backend, data, config, budget)
        from triptych.training.sample import generate
        extra["sample"] = generate(backend.logits, config.block_size, data.tokenizer, "It is a truth", 160,
                                   temperature=0.8, seed=budget.seed)
    row = Row(experiment, variant, res.train_loss, res.val_loss, math.exp(res.val_loss), res.seconds, extra,
              res.history)
    if row_path is not None:
        atomic_write_json(row_path, {**row.__dict__, "stamp": {"budget": budget.__dict__, "config": config.to_dict()}})
    return row


def last_position_loss(backend, data: CharData, config: GPTConfig, budget: Budget) -> float:
    """Validation loss counted only at the last position of each window, where the input holds no
    future character: a leaky model cannot cheat there (targets elsewhere are ignored, -100)."""
    from triptych.training.data import get_batch
    from triptych.training.trainer import VAL_SEED
    losses = []
    for i in range(budget.eval_batches * 4):
        x, y = get_batch(data.val, budget.batch_size, config.block_size, VAL_SEED, i)
        y = np.where(np.arange(y.shape[1]) == y.shape[1] - 1, y, -100)
        losses.append(backend.loss(x, y))
    return float(np.mean(losses))


def run_experiment(name: str, budget: Budget, data: CharData, progress: bool = True, cache: dict | None = None,
                   out: Path | None = None, resume: bool = False) -> list[Row]:
    """Every variant of one experiment; with `out`, variant v keeps its run in out/runs/NAME/v."""
    _, variants = EXPERIMENTS[name]
    return [run_variant(name, label, overrides, budget, data, progress, cache,
                        None if out is None else out / "runs" / name / _slug(label), resume)
            for label, overrides in variants]


def _fmt(x, digits=3):
    return "n/a" if x is None else f"{x:.{digits}f}"


def row_cells(r: Row) -> list[str]:
    cells = [r.experiment, r.variant, _fmt(r.train_loss), _fmt(r.val_loss), _fmt(r.val_ppl, 2), f"{r.seconds:.1f}"]
    notes = []
    if "trained_for" in r.extra:
        notes.append(f"same run as in {r.extra['trained_for']}")
    for key in sorted((k for k in r.extra if k.startswith("val@")), key=lambda k: int(k[4:])):
        notes.append(f"{key} {_fmt(r.extra[key])}")
    if "val_last_position" in r.extra:
        notes.append(f"val, last position only {_fmt(r.extra['val_last_position'])}")
    return cells + ["; ".join(notes)]


HEADERS = ["experiment", "variant", "train loss", "val loss", "val ppl", "run time (s)", "notes"]


def lengths_table(rows: list[Row], block_size: int) -> tuple[list[str], list[list[str]]]:
    """positions: method x eval length, 'whole window / positions >= block' per cell."""
    lengths = eval_lengths(block_size)
    headers = ["method"] + [f"{L} ({L // block_size}x)" for L in lengths] + [f"{lengths[-1]} - {block_size}"]
    body = []
    for r in rows:
        cells = [r.variant]
        for L in lengths:
            whole, beyond = r.extra.get(f"val@{L}"), r.extra.get(f"beyond@{L}")
            cells.append(_fmt(whole) if L == block_size or whole is None else f"{_fmt(whole)} / {_fmt(beyond)}")
        first, last = r.extra.get(f"val@{lengths[0]}"), r.extra.get(f"val@{lengths[-1]}")
        cells.append("n/a" if first is None or last is None else f"{last - first:+.3f}")  # > 0: worse when longer
        body.append(cells)
    return headers, body


def save_plot(name: str, rows: list[Row], out: Path, block_size: int = 64) -> Path:
    path = out / f"{name}.png"
    if name == "positions":
        from triptych.training.plots import plot_length_curves
        lengths = eval_lengths(block_size)
        curves = {r.variant: {"whole window": [(L, r.extra.get(f"val@{L}")) for L in lengths],
                              f"positions >= {block_size} only": [(L, r.extra.get(f"beyond@{L}")) for L in lengths[1:]]}
                  for r in rows}
        plot_length_curves(curves, path, block_size,
                           title=f"Train at {block_size} characters, evaluate longer (held-out Austen)")
        return path
    from triptych.training.plots import plot_loss_curves
    plot_loss_curves({r.variant: r.history for r in rows}, path, title=EXPERIMENTS[name][0])
    return path


def write_report(rows: list[Row], budget: Budget, out: Path, plots: dict[str, Path]) -> Path:
    """report.md: the budget, one table of every row, each experiment's plot, the leaky model's text."""
    from triptych.common.io import atomic_write_text
    lines = ["# Attention experiments (exercises.md, section I)", "",
             f"Backend {budget.backend}; every variant: {budget.steps} AdamW steps, batch {budget.batch_size} x "
             f"block {budget.block_size}, {budget.n_layer} layers, {budget.n_head} heads, n_embd {budget.n_embd}, "
             f"lr {budget.lr} (cosine, 10% warmup). Losses in nats/char on Jane Austen (validation: the last 10%).", "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    lines.append("")
    if any(r.experiment == "positions" for r in rows):
        B = budget.block_size
        headers, body = lengths_table([r for r in rows if r.experiment == "positions"], B)
        lines += ["## Train short, test long", "",
                  f"Held-out loss (nats/char) on windows of {', '.join(str(L) for L in eval_lengths(B))} characters "
                  f"after training at {B}. Past {B} each cell reads 'whole window / positions >= {B} only' (the "
                  f"positions training never reached). Learned positions have no table rows past {B}: n/a. "
                  f"Sinusoidal positions are added to token embeddings scaled by sqrt(n_embd).", "",
                  "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        lines.append("")
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

    from triptych.common.console import console, print_json
    from triptych.common.io import atomic_write_json
    from triptych.training.data import load_char_data

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
            console.print(f"[bold]{EXPERIMENTS[name][0]}[/] ({budget.backend}, {budget.steps} steps per variant, "
                          f"{len(EXPERIMENTS[name][1])} variants)")
        try:
            got = run_experiment(name, budget, data, progress=not args.json, cache=cache, out=out,
                                 resume=getattr(args, "resume", False))
        except Interrupted as e:
            console.print(f"[yellow]{name}: {e}[/]")
            return 130
        rows += got
        plots[name] = save_plot(name, got, out, budget.block_size)
    atomic_write_json(out / f"{args.name}.json", [{**{k: v for k, v in r.__dict__.items() if k != "history"}} for r in rows])
    if args.json:
        print_json([{k: v for k, v in r.__dict__.items() if k != "history"} for r in rows])
    else:
        table = Table(title=f"attention experiments, {budget.backend}, {time.perf_counter() - t0:.0f} s in all")
        for h in HEADERS:
            table.add_column(h)
        for r in rows:
            table.add_row(*row_cells(r))
        console.print(table)
        if "positions" in names:
            headers, body = lengths_table([r for r in rows if r.experiment == "positions"], budget.block_size)
            lt = Table(title=f"held-out loss at each eval length (trained at {budget.block_size}; "
                             f"whole window / positions >= {budget.block_size} only)")
            for h in headers:
                lt.add_column(h)
            for cells in body:
                lt.add_row(*cells)
            console.print(lt)
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
