"""`bench finetune`: one fine-tuning step of all-MiniLM-L6-v2 (forward, backward, AdamW) per method,
in NumPy (numpy_impl/bert_finetune.py's hand-written backward + numpy_impl/optim.py), JAX (jax.grad,
jit; jax_impl/optim.py) and torch (the backend's EncoderClassifier, autograd, torch.optim.AdamW),
float32, on a batch of real fine-foods reviews (batch 16 x 128 tokens by default). Rounds interleave
the backends and the medians are reported with the ratio to torch. Measurements only.
"""
from __future__ import annotations

import argparse
import statistics
import time


from triptych.common.argtypes import Default, output_dir
from triptych.common.bert_finetune import METHODS
from triptych.common.console import positive_int as _positive

__all__ = ["register", "bench_finetune", "review_batch", "make_step", "run"]

BACKENDS = ("numpy", "jax", "torch")
REFERENCE = "torch"
LR, BETAS, WD = 1e-3, (0.9, 0.999), 0.01


def register(bsub) -> None:
    f = bsub.add_parser("finetune", help="one MiniLM fine-tuning step (forward+backward+AdamW) per method: "
                                         "NumPy and JAX vs torch")
    f.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    f.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {','.join(BACKENDS)}")
    f.add_argument("--batch", type=_positive, default=16, help="examples per step (default 16)")
    f.add_argument("--tokens", type=_positive, default=128, help="max_length of the reviews (default 128)")
    f.add_argument("--rounds", type=_positive, default=3, help="interleaved timed rounds; medians shown (default 3)")
    f.add_argument("--threads", type=_positive, default=None, help="torch and OpenBLAS threads (default: all cores)")
    f.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    f.add_argument("--out", type=output_dir, default=Default("runs/bench"), help="folder for finetune.json")
    f.add_argument("--layers", type=_positive, default=None, help=argparse.SUPPRESS)  # tests: fewer layers
    f.set_defaults(func=run)


def _names(text: str, allowed, flag: str) -> list[str]:
    from triptych.common.console import CLIError

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise CLIError(f"{flag}: expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
    return names


def review_batch(batch: int, tokens: int):
    """The first `batch` training reviews, tokenized by MiniLM's tokenizer through make_loader (truncated
    to `tokens`, padded to the longest): (ids, mask, types, labels) NumPy."""
    from torch_ref.finetune.data import load_task, make_loader
    from triptych.pretrained import minilm

    train = load_task("fine-foods").train
    loader = make_loader(train.subset(range(batch)), minilm.tokenizer(), batch_size=batch, max_length=tokens,
                         shuffle=False)
    b = next(iter(loader))
    return tuple(b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids", "labels"))


def _setup(method: str, n_layers: int | None, n_classes: int = 2, seed: int = 0):
    """(frozen, trainable, n_heads) float32 for `method` on the real checkpoint, initialised as
    `finetune train --backend numpy|jax` does (bert_classify.init_classifier; a prefix of 16 rows, LoRA
    r = 8), cut to the first n_layers layers when given."""
    from triptych.training.bert_classify import init_classifier

    frozen, trainable, n_heads, _ = init_classifier(method, n_classes, prefix_length=16, lora_r=8, seed=seed)
    if n_layers is not None:
        def kept(key):
            return not key.startswith("layers.") or int(key.split(".")[1]) < n_layers
        frozen = {k: v for k, v in frozen.items() if kept(k)}
        trainable = {k: v for k, v in trainable.items() if kept(k)}
    return frozen, trainable, n_heads


def _numpy_step(method, frozen, trainable, n_heads, batch):
    from numpy_impl.bert_finetune import bert_finetune_loss_and_grads
    from numpy_impl.optim import adamw_init, adamw_step

    state = {"p": trainable, "opt": adamw_init(trainable)}

    def step():
        loss, grads = bert_finetune_loss_and_grads(method, frozen, state["p"], *batch, n_heads)
        state["p"], state["opt"] = adamw_step(state["p"], grads, state["opt"], LR, BETAS, 1e-8, WD)
        return loss
    return step


def _jax_step(method, frozen, trainable, n_heads, batch):
    import jax
    import jax.numpy as jnp

    from jax_impl.bert_finetune import bert_finetune_loss_and_grads
    from jax_impl.optim import adamw_init, adamw_step

    frozen = {k: jnp.asarray(v) for k, v in frozen.items()}
    state = {"p": {k: jnp.asarray(v) for k, v in trainable.items()}}
    state["opt"] = adamw_init(state["p"])

    def step():
        loss, grads = bert_finetune_loss_and_grads(method, frozen, state["p"], *batch, n_heads)
        state["p"], state["opt"] = adamw_step(state["p"], grads, state["opt"], LR, BETAS, 1e-8, WD)
        jax.block_until_ready(state["p"])
        return float(loss)
    return step


def _torch_device() -> str:
    """torch's step runs where the fine-tuning backend trains: the GPU when there is one. float(loss)
    waits for the GPU, so a step's time is its whole work."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_step(method, frozen, trainable, n_heads, batch):
    import torch
    import torch.nn.functional as F

    from torch_ref.bert_finetune import finetune_model, trainable_of

    device = _torch_device()
    model = finetune_model(method, frozen, trainable, n_heads, dtype=torch.float32).to(device)
    opt = torch.optim.AdamW(list(trainable_of(model).values()), lr=LR, betas=BETAS, weight_decay=WD)
    ids, mask, types, labels = (torch.as_tensor(a).long().to(device) for a in batch)

    def step():
        loss = F.cross_entropy(model(ids, mask, types), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())
    return step


def make_step(backend: str, method: str, frozen, trainable, n_heads: int, batch):
    """A callable running one training step of `method` in `backend` (its state kept between calls)."""
    return {"numpy": _numpy_step, "jax": _jax_step, "torch": _torch_step}[backend](method, frozen, trainable,
                                                                                n_heads, batch)


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_finetune(methods, backends, batch: int = 16, tokens: int = 128, rounds: int = 3, n_layers=None,
                   tick=None, threads: int | None = None) -> dict:
    """Median seconds per step for each (method, backend) and its speed against torch's, torch s /
    backend s (1.00x: as fast as torch, above 1: faster), the convention of every `bench`."""
    from triptych.generation.bench import set_threads

    threads = set_threads(threads)  # the same count for torch and NumPy's BLAS
    backends = list(backends) if REFERENCE in backends else list(backends) + [REFERENCE]
    data = review_batch(batch, tokens)
    rows = []
    for method in methods:
        frozen, trainable, n_heads = _setup(method, n_layers)
        steps = {b: make_step(b, method, frozen, trainable, n_heads, data) for b in backends}
        first = {b: steps[b]() for b in backends}  # warm-up (JAX compiles); the same first loss everywhere
        times = {b: [] for b in backends}
        for _ in range(rounds):
            for b in backends:
                times[b].append(_time(steps[b]))
                tick and tick()
        ref = statistics.median(times[REFERENCE])
        for b in backends:
            med = statistics.median(times[b])
            rows.append({"method": method, "backend": b, "median_s": med, "ratio_to_torch": ref / med,
                         "first_loss": first[b], "loss_gap_to_torch": abs(first[b] - first[REFERENCE])})
    import jax

    devices = {"numpy": "cpu", "jax": jax.default_backend(), "torch": _torch_device()}
    return {"batch": batch, "tokens": int(data[0].shape[1]), "rounds": rounds, "dtype": "float32", "devices": devices,
            "layers": n_layers or 6, "threads": threads, "rows": rows}


def run(args) -> int:
    from pathlib import Path

    from rich.table import Table

    from triptych.common.console import console, print_json
    from triptych.common.io import atomic_write_json

    methods = _names(args.methods, METHODS, "--methods")
    backends = _names(args.backends, BACKENDS, "--backends")
    res = bench_finetune(methods, backends, args.batch, args.tokens, args.rounds, args.layers, threads=args.threads)
    atomic_write_json(Path(args.out) / "finetune.json", res)
    if args.json:
        print_json(res)
        return 0
    table = Table(title=f"MiniLM fine-tuning step (forward+backward+AdamW), float32, batch {res['batch']} x "
                        f"{res['tokens']} tokens, median of {res['rounds']} interleaved rounds (threads: torch "
                        f"{res['threads']['torch']}, BLAS {res['threads']['blas']}, XLA all cores)"
                        + "".join(f"; {b} on {d}" for b, d in res["devices"].items() if d != "cpu"))
    for col in ("method", "backend", "s / step", "vs torch", "first loss gap"):
        table.add_column(col, justify="left" if col in ("method", "backend") else "right")
    for r in res["rows"]:
        table.add_row(r["method"], r["backend"], f"{r['median_s']:.3f}", f"{r['ratio_to_torch']:.2f}x",
                      f"{r['loss_gap_to_torch']:.1e}")
    console.print(table)
    console.print("vs torch = torch s / backend s per step (1.00x = as fast as torch; above 1 = faster)")
    return 0
