"""The training loop, the same for the three backends (training.backends):

    for step in range(start, steps):
        x, y = get_batch(train, seed, step)          a pure function of the step -> exact resume
        loss = backend.train_step(x, y, lr(step))    forward, backward, clip, AdamW
        every eval_interval: validation loss and perplexity on fixed validation batches
        every ckpt_interval, at the end and on Ctrl-C: an atomic checkpoint

The learning rate warms up linearly, then follows a cosine down to min_lr at `steps`.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from triptych.common.checks import InputError
from triptych.common.gpt_config import GPTConfig
from triptych.training.backends import BACKENDS, OptimConfig, arch_of, init_params, make_backend
from triptych.training.checkpoint import load_checkpoint, save_checkpoint, write_run_file
from triptych.training.data import CharData, get_batch

VAL_SEED = 2**20  # validation batches are drawn from their own fixed stream
TPS_WINDOW = 20  # the progress bar's tokens/s: the mean over this many recent steps (one step is noisy)


@dataclass
class TrainArgs:
    backend: str = "torch"
    dtype: str = "float32"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 20
    ckpt_interval: int = 250
    seed: int = 0
    max_minutes: float = 0.0  # 0: no time limit
    limit_chars: int | None = None

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        for name in ("steps", "batch_size", "eval_interval", "eval_batches", "ckpt_interval"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise InputError(f"lr, min_lr: expected 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")


def lr_at(step: int, a: TrainArgs) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at the last step."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    progress = min(1.0, (step - a.warmup) / max(1, a.steps - a.warmup))
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1.0 + math.cos(math.pi * progress))


def estimate_loss(backend, data: np.ndarray, config: GPTConfig, batch_size: int, n_batches: int,
                  block_size: int | None = None) -> float:
    """Mean loss over n_batches fixed random windows of `data` (the same windows every call)."""
    T = block_size or config.block_size
    losses = [backend.loss(*get_batch(data, batch_size, T, VAL_SEED, i)) for i in range(n_batches)]
    return float(np.mean(losses))


@dataclass
class TrainResult:
    step: int
    train_loss: float
    val_loss: float | None
    seconds: float
    interrupted: bool
    history: dict = field(default_factory=dict)
    checkpoint: str | None = None


class _Interrupt(KeyboardInterrupt):
    """Raised by `interrupt_at` (tests): behaves exactly like Ctrl-C at that step."""


@contextmanager
def _ctrl_c_stops_between_steps():
    """While training, Ctrl-C (SIGINT) only raises a flag that the loop reads between steps.
    Python's default would raise KeyboardInterrupt wherever the main thread happens to be, for
    example after the optimizer has updated half of the weights: the checkpoint written next would
    then not be the state after any whole number of steps, and resuming would not be exact.
    Off the main thread (where signals cannot be caught) Python's default stays."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: requested.set())
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def train(args: TrainArgs, config, data: CharData, out: str | Path | None = None,
          resume: bool = False, progress: bool = True, interrupt_at: int | None = None,
          on_eval=None) -> tuple[TrainResult, object]:
    """Train (or resume training) and return (TrainResult, backend). config: a GPTConfig or a
    LlamaConfig (the Llama-style model). With `out`, checkpoints go to out/ckpt.npz and the loss
    curve to out/loss.png, and out/run.json records the run's settings (what `--resume` reads)."""
    args.check()
    ckpt_path = Path(out) / "ckpt.npz" if out is not None else None
    history = {"train": [], "val": []}
    start, elapsed = 0, 0.0
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise InputError(f"resume: expected a checkpoint at {ckpt_path}, found none (train without --resume first)")
        params, opt_state, meta = load_checkpoint(ckpt_path)
        config, start, history, elapsed = meta["config"], meta["step"], meta["history"], meta.get("seconds", 0.0)
        if meta["chars"] != data.tokenizer.chars:
            raise InputError("resume: the checkpoint's vocabulary differs from this corpus'")
    else:
        if config.vocab_size != data.tokenizer.vocab_size:
            raise InputError(f"vocab_size: expected the corpus' {data.tokenizer.vocab_size} characters, got {config.vocab_size}")
        params, opt_state = init_params(config, args.seed, np.dtype(args.dtype)), None
    if out is not None:
        write_run_file(out, arch_of(config), asdict(args), config.to_dict())
    hp = OptimConfig(weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    backend = make_backend(args.backend, config, params, opt_state, args.dtype, hp, args.seed)

    def checkpoint(step, seconds=None):
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, backend.params(), backend.opt_state(),
                            {"arch": arch_of(config), "config": config.to_dict(), "step": step, "seed": args.seed, "args": asdict(args),
                             "chars": data.tokenizer.chars, "history": history, "seconds": seconds or elapsed + time.perf_counter() - t0})

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    cols = [TextColumn(f"[bold]{args.backend}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  val {task.fields[val]}  "
                       f"{{task.fields[tps]:,.0f}} tok/s (last {TPS_WINDOW} steps)  ETA"),
            TimeRemainingColumn()]
    t0 = time.perf_counter()
    step, interrupted, tokens = start, False, args.batch_size * config.block_size
    # a resumed run starts from the checkpoint's last validation loss, not from "none yet"
    val = history["val"][-1][1] if history["val"] else None
    recent = deque(maxlen=TPS_WINDOW)  # seconds of the latest steps
    shown = f"{val:.3f} (ppl {math.exp(val):.2f})" if val is not None else "-"
    with Progress(*cols, disable=not progress, transient=False) as bar, _ctrl_c_stops_between_steps() as ctrl_c:
        task = bar.add_task("train", total=args.steps, completed=start, loss=float("nan"), val=shown, tps=0.0)
        try:
            while step < args.steps:
                if ctrl_c.is_set():
                    raise KeyboardInterrupt
                if args.max_minutes and (time.perf_counter() - t0) > 60 * args.max_minutes:
                    break
                ts = time.perf_counter()
                x, y = get_batch(data.train, args.batch_size, config.block_size, args.seed, step)
                loss = backend.train_step(x, y, lr_at(step, args), step)
                if not math.isfinite(loss):
                    raise InputError(f"lr: training diverged at step {step} (loss {loss}); try a smaller --lr")
                history["train"].append((step, loss))
                step += 1
                if step % args.eval_interval == 0 or step == args.steps:
                    val = estimate_loss(backend, data.val, config, args.batch_size, args.eval_batches)
                    history["val"].append((step, val))
                    bar.update(task, val=f"{val:.3f} (ppl {math.exp(val):.2f})")
                    if on_eval is not None:
                        on_eval(step, val)
                if step % args.ckpt_interval == 0:
                    checkpoint(step)
                recent.append(time.perf_counter() - ts)
                bar.update(task, advance=1, loss=loss, tps=tokens * len(recent) / sum(recent))
                if interrupt_at is not None and step == interrupt_at:
                    raise _Interrupt
        except KeyboardInterrupt:
            interrupted = True
        if not interrupted and step > start and (not history["val"] or history["val"][-1][0] != step):
            val = estimate_loss(backend, data.val, config, args.batch_size, args.eval_batches)  # stopped by the clock
            history["val"].append((step, val))
        seconds = elapsed + time.perf_counter() - t0  # the run's own time, as its checkpoint records it
        checkpoint(step, seconds)
    if ckpt_path is not None and history["train"]:
        from triptych.training.plots import plot_loss_curves
        model = "Llama-style model" if arch_of(config) == "llama" else "GPT"
        plot_loss_curves({args.backend: history}, ckpt_path.parent / "loss.png",
                         title=f"tiny {model} on Jane Austen ({args.backend})")
    last = float(np.mean([l for _, l in history["train"][-20:]])) if history["train"] else float("nan")
    return TrainResult(step, last, val, seconds, interrupted, history, str(ckpt_path) if ckpt_path else None), backend
