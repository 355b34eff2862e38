"""`gpt bench`: one full training step (forward, backward, clipping, AdamW) of the default GPTConfig
on a real Austen batch, timed in the three backends in one process; speed is reported relative to
torch autograd (ratio = torch seconds / backend seconds, so 0.5 means half torch's speed)."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

from triptych.common.gpt_config import GPTConfig, init_gpt_params
from triptych.training.backends import BACKENDS, make_backend
from triptych.training.data import get_batch, load_char_data


def time_steps(backend_name: str, config: GPTConfig, x, y, repeats: int, dtype: str = "float32") -> list[float]:
    """Seconds per step for `repeats` steps, after one untimed warm-up step (JAX compiles there)."""
    b = make_backend(backend_name, config, init_gpt_params(config, 0, np.dtype(dtype)), None, dtype)
    b.train_step(x, y, 1e-3, 0)
    times = []
    for s in range(repeats):
        t = time.perf_counter()
        b.train_step(x, y, 1e-3, s + 1)
        times.append(time.perf_counter() - t)
    return times


def limit_threads(n: int) -> None:
    """The same number of compute threads for every backend: torch intra-op threads, the BLAS under
    NumPy (threadpoolctl) and XLA's CPU pool (only before jax is first imported)."""
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
    if "jax" not in sys.modules and n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()


def run_bench_cli(args) -> int:
    from rich.table import Table

    from triptych.common.console import CLIError, console, print_json
    if args.repeats < 1:
        raise CLIError(f"--repeats: expected a positive integer, got {args.repeats}")
    if args.threads < 0:
        raise CLIError(f"--threads: expected 0 (libraries' defaults) or a positive count, got {args.threads}")
    if args.threads:
        limit_threads(args.threads)
    data = load_char_data()
    config = GPTConfig(vocab_size=data.tokenizer.vocab_size)
    x, y = get_batch(data.train, args.batch_size, config.block_size, 0, 0)
    med = {}
    for name in BACKENDS:
        med[name] = float(np.median(time_steps(name, config, x, y, args.repeats, args.dtype)))
    tokens = args.batch_size * config.block_size
    rows = {n: {"seconds_per_step": t, "tokens_per_s": tokens / t, "speed_vs_torch": med["torch"] / t} for n, t in med.items()}
    if args.json:
        print_json({"config": config.to_dict(), "batch_size": args.batch_size, "dtype": args.dtype,
                    "threads": args.threads, "backends": rows})
        return 0
    table = Table(title=f"one training step, default config {config.n_layer}x{config.n_embd}, batch "
                        f"{args.batch_size}x{config.block_size}, {args.dtype}, "
                        f"{args.threads or 'default'} thread(s), median of {args.repeats}")
    for h in ("backend", "ms / step", "tokens / s", "speed vs torch"):
        table.add_column(h, justify="right")
    for n, r in rows.items():
        table.add_row(n, f"{1000 * r['seconds_per_step']:.0f}", f"{r['tokens_per_s']:,.0f}", f"{r['speed_vs_torch']:.2f}x")
    console.print(table)
    goal = rows["numpy"]["speed_vs_torch"]
    console.print(f"NumPy (hand-written backward) runs at {goal:.2f}x torch autograd's speed (goal >= 0.5x).")
    return 0
