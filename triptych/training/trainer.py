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


def _start_or_resume(args: TrainArgs, config, data: CharData, ckpt_path: Path | None, resume: bool):
    """(config, params, opt_state, start step, history, seconds trained so far): fresh weights from
    args.seed, or everything the checkpoint at ckpt_path recorded."""
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise InputError(f"resume: expected a checkpoint at {ckpt_path}, found none (train without --resume first)")
        params, opt_state, meta = load_checkpoint(ckpt_path)
        if meta["chars"] != data.tokenizer.chars:
            raise InputError("resume: the checkpoint's vocabulary differs from this corpus'")
        return meta["config"], params, opt_state, meta["step"], meta["history"], meta.get("seconds", 0.0)
    if config.vocab_size != data.tokenizer.vocab_size:
        raise InputError(f"vocab_size: expected the corpus' {data.tokenizer.vocab_size} characters, got {config.vocab_size}")
    params = init_params(config, args.seed, np.dtype(args.dtype))
    return config, params, None, 0, {"train": [], "val": []}, 0.0


@dataclass
class _Run:
    """What the steps of one run share: the backend, the loss history, where checkpoints go and the clock."""
    args: TrainArgs
    config: object
    data: CharData
    backend: object
    history: dict
    ckpt_path: Path | None
    elapsed: float  # seconds trained before this process started (a resumed run)
    t0: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        """The run's own time, as its checkpoint records it."""
        return self.elapsed + time.perf_counter() - self.t0

    def step(self, step: int) -> float:
        """One optimizer step on the batch of `step`; its loss, also recorded in history."""
        a = self.args
        x, y = get_batch(self.data.train, a.batch_size, self.config.block_size, a.seed, step)
        loss = self.backend.train_step(x, y, lr_at(step, a), step)
        if not math.isfinite(loss):
            raise InputError(f"lr: training diverged at step {step} (loss {loss}); try a smaller --lr")
        self.history["train"].append((step, loss))
        return loss

    def validate(self, step: int) -> float:
        """Validation loss after `step` steps, also recorded in history."""
        val = estimate_loss(self.backend, self.data.val, self.config, self.args.batch_size, self.args.eval_batches)
        self.history["val"].append((step, val))
        return val

    def checkpoint(self, step: int, seconds: float | None = None) -> None:
        if self.ckpt_path is not None:
            a = self.args
            save_checkpoint(self.ckpt_path, self.backend.params(), self.backend.opt_state(),
                            {"arch": arch_of(self.config), "config": self.config.to_dict(), "step": step,
                             "seed": a.seed, "args": asdict(a), "chars": self.data.tokenizer.chars,
                             "history": self.history, "seconds": seconds or self.seconds()})


def _progress_bar(backend_name: str, progress: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    cols = [TextColumn(f"[bold]{backend_name}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  val {task.fields[val]}  "
                       f"{{task.fields[tps]:,.0f}} tok/s (last {TPS_WINDOW} steps)  ETA"),
            TimeRemainingColumn()]
    return Progress(*cols, disable=not progress, transient=False)


def _shown(val: float | None) -> str:
    return f"{val:.3f} (ppl {math.exp(val):.2f})" if val is not None else "-"


def _run_steps(run: _Run, start: int, progress: bool, interrupt_at: int | None, on_eval):
    """Steps from `start` until args.steps, the time limit or Ctrl-C, under a progress bar; then a last
    validation loss (unless interrupted or just measured) and a checkpoint.
    Returns (step reached, last validation loss, interrupted, seconds)."""
    args, history = run.args, run.history
    step, interrupted, tokens = start, False, args.batch_size * run.config.block_size
    # a resumed run starts from the checkpoint's last validation loss, not from "none yet"
    val = history["val"][-1][1] if history["val"] else None
    recent = deque(maxlen=TPS_WINDOW)  # seconds of the latest steps
    with _progress_bar(args.backend, progress) as bar, _ctrl_c_stops_between_steps() as ctrl_c:
        task = bar.add_task("train", total=args.steps, completed=start, loss=float("nan"), val=_shown(val), tps=0.0)
        try:
            while step < args.steps:
                if ctrl_c.is_set():
                    raise KeyboardInterrupt
                if args.max_minutes and (time.perf_counter() - run.t0) > 60 * args.max_minutes:
                    break
                ts = time.perf_counter()
                loss = run.step(step)
                step += 1
                if step % args.eval_interval == 0 or step == args.steps:
                    val = run.validate(step)
                    bar.update(task, val=_shown(val))
                    if on_eval is not None:
                        on_eval(step, val)
                if step % args.ckpt_interval == 0:
                    run.checkpoint(step)
                recent.append(time.perf_counter() - ts)
                bar.update(task, advance=1, loss=loss, tps=tokens * len(recent) / sum(recent))
                if interrupt_at is not None and step == interrupt_at:
                    raise _Interrupt
        except KeyboardInterrupt:
            interrupted = True
        if not interrupted and step > start and (not history["val"] or history["val"][-1][0] != step):
            val = run.validate(step)  # stopped by the clock
        seconds = run.seconds()
        run.checkpoint(step, seconds)
    return step, val, interrupted, seconds


def _plot_history(args: TrainArgs, config, history: dict, ckpt_path: Path | None) -> None:
    """The loss curves beside the checkpoint (out/loss.png)."""
    if ckpt_path is not None and history["train"]:
        from triptych.training.plots import plot_loss_curves
        model = "Llama-style model" if arch_of(config) == "llama" else "GPT"
        plot_loss_curves({args.backend: history}, ckpt_path.parent / "loss.png",
                         title=f"tiny {model} on Jane Austen ({args.backend})")


def train(args: TrainArgs, config, data: CharData, out: str | Path | None = None,
          resume: bool = False, progress: bool = True, interrupt_at: int | None = None,
          on_eval=None, devices: int = 1) -> tuple[TrainResult, object]:
    """Train (or resume training) and return (TrainResult, backend). config: a GPTConfig or a
    LlamaConfig (the Llama-style model). With `out`, checkpoints go to out/ckpt.npz and the loss
    curve to out/loss.png, and out/run.json records the run's settings (what `--resume` reads).
    devices > 1 (jax): data-parallel over that many JAX devices (training/data_parallel.py)."""
    args.check()
    ckpt_path = Path(out) / "ckpt.npz" if out is not None else None
    config, params, opt_state, start, history, elapsed = _start_or_resume(args, config, data, ckpt_path, resume)
    if out is not None:
        write_run_file(out, arch_of(config), asdict(args), config.to_dict())
    hp = OptimConfig(weight_decay=args.weight_decay, grad_clip=args.grad_clip)
    backend = make_backend(args.backend, config, params, opt_state, args.dtype, hp, args.seed, devices)
    run = _Run(args, config, data, backend, history, ckpt_path, elapsed)
    step, val, interrupted, seconds = _run_steps(run, start, progress, interrupt_at, on_eval)
    _plot_history(args, config, history, ckpt_path)
    last = float(np.mean([l for _, l in history["train"][-20:]])) if history["train"] else float("nan")
    return TrainResult(step, last, val, seconds, interrupted, history, str(ckpt_path) if ckpt_path else None), backend
