"""`python cli.py bench`: measurements only (nothing here passes or fails).

bench attention     times softmax(Q K^T / sqrt(d)) V in NumPy, JAX and torch in one run, float32,
                    forward and forward+backward, and the machine's matmul peak in the same run.
bench long-context  one layer of attention at exercises.md G.2's size (16,384 tokens, 48 heads,
                    head size 128, one sequence), computed exactly with tiled attention; the peak
                    resident memory is MEASURED in a fresh subprocess per backend.
bench tokenizer     our byte-level BPE vs the `tokenizers` library: training time and encoding MB/s
                    (all of it in triptych/bpe/bench.py).
bench decode        SmolLM2-135M prefill and KV-cache decode tokens/s, numpy and jax vs HF eager,
                    beside the bandwidth and matmul bounds (all of it in triptych/generation/bench.py).
bench finetune      one all-MiniLM-L6-v2 fine-tuning step (forward+backward+AdamW) per method (full, head,
                    prefix, lora), NumPy and JAX vs torch (all of it in triptych/benchmarks/finetune.py).

The measuring code lives in benchmarks/ (attention.py, long_context.py), triptych/bpe/bench.py and
triptych/generation/bench.py; this file declares the subcommands and prints their results.
"""
from __future__ import annotations

import argparse

from triptych.common.argtypes import Default, output_dir
from triptych.common.console import positive_int as _positive

ORDER = 80


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        dims = tuple(int(x) for x in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) <= 0:
        raise argparse.ArgumentTypeError(f"expected B,H,T,D (four positive integers), got {text!r}")
    return dims


def register(sub) -> None:
    p = sub.add_parser("bench", help="time attention in NumPy, JAX and torch; long-context memory; "
                                     "our BPE tokenizer vs the tokenizers library; SmolLM2 decode tokens/s")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCH", parser_class=type(p))
    bsub.required = True

    a = bsub.add_parser("attention", help="forward and forward+backward times, GFLOP/s, %% of matmul peak, ratio to torch")
    a.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    a.add_argument("--repeats", type=_positive, default=7, help="timed calls per row (median reported)")
    a.add_argument("--out", type=output_dir, default=Default("runs/bench"), help="folder for attention.png and attention.json")
    a.add_argument("--causal", choices=["both", "no", "yes"], default="both", help="which masking to time")
    # Tests run a tiny shape and a small GEMM; users get the two shapes and a 2048^2 GEMM.
    a.add_argument("--shape", type=_shape, action="append", help=argparse.SUPPRESS)
    a.add_argument("--peak-size", type=_positive, default=2048, help=argparse.SUPPRESS)
    a.set_defaults(func=run_attention)

    lc = bsub.add_parser("long-context", help="exact attention at 16,384 tokens x 48 heads: measured peak memory and time")
    lc.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    lc.add_argument("--tokens", type=_positive, default=16384)
    lc.add_argument("--heads", type=_positive, default=48)
    lc.add_argument("--head-dim", type=_positive, default=128)
    lc.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True,
                    help="decoder (GPT) attention, as in G.2 (default); --no-causal for full attention")
    lc.add_argument("--backends", default="numpy,jax", help="comma-separated subset of numpy,jax")
    lc.add_argument("--out", type=output_dir, default=Default("runs/bench"), help="folder for long_context.json")
    lc.set_defaults(func=run_long_context)

    from triptych.bpe.bench import register as register_tokenizer  # `bench tokenizer`: all of it lives in triptych/bpe/bench.py
    register_tokenizer(bsub)
    from triptych.generation.bench import register as register_decode  # `bench decode`: all of it in triptych/generation/bench.py
    register_decode(bsub)
    from triptych.benchmarks.finetune import register as register_finetune  # `bench finetune`: all of it in benchmarks/finetune.py
    register_finetune(bsub)


# ------------------------------------------------------------------------------------------------
# bench attention


def run_attention(args) -> int:
    from pathlib import Path

    from triptych.benchmarks.attention import SHAPES, bench_attention, save_ratio_plot, shape_label, thread_info

    from rich.progress import Progress
    from rich.table import Table

    from triptych.commands._common import console, print_json
    from triptych.common.io import atomic_write_json

    shapes = args.shape or SHAPES
    with Progress(console=console, transient=True, disable=args.json) as progress:
        causal_values = {"both": (False, True), "no": (False,), "yes": (True,)}[args.causal]
        rows, peak = bench_attention(shapes, args.repeats, causal_values, args.peak_size, progress)
    out = Path(args.out)
    atomic_write_json(out / "attention.json", {"matmul_peak": peak, "threads": thread_info(), "rows": rows})
    save_ratio_plot(rows, out / "attention.png")
    if args.json:
        print_json(rows)
        return 0
    table = Table(title=f"Attention, float32, median of {args.repeats} (matmul peak {peak['peak_gflops']:.1f} GFLOP/s, "
                        f"{peak['n']}x{peak['n']} GEMM measured now)")
    for col, justify in (("shape", "left"), ("causal", "center"), ("pass", "left"), ("backend", "left"), ("ms", "right"),
                         ("GFLOP/s", "right"), ("% peak", "right"), ("vs torch", "right")):
        table.add_column(col, justify=justify)
    for r in rows:
        ratio = r["ratio_to_torch"]
        style = "green" if ratio >= 0.9 else ("yellow" if ratio >= 0.5 else "red")
        table.add_row(shape_label(r["shape"]), "yes" if r["causal"] else "no",
                      "fwd" if r["pass"] == "forward" else "fwd+bwd", r["backend"], f"{r['ms']:.1f}",
                      f"{r['gflops']:.1f}", f"{r['pct_peak']:.0f}%", f"[{style}]{ratio:.2f}x[/]")
    console.print(table)
    console.print("vs torch = torch ms / backend ms (1.00x = as fast as torch SDPA). 'numpy sdpa fast' is "
                  "numpy_impl.attention.scaled_dot_product_attention(kernel='fast') and 'jax sdpa fast' its JAX twin; both also "
                  "return the weights. 'jax jit' is the plain jitted steps. 'jax matmuls only (bound)' is not "
                  "attention: jax fast's two matmuls without the softmax, the most any JAX softmax here can reach.")
    console.print(f"saved {out / 'attention.png'} and {out / 'attention.json'}")
    return 0


# ------------------------------------------------------------------------------------------------
# bench long-context: each backend runs in its own subprocess, so its peak RSS is its own.


def run_long_context(args) -> int:
    from pathlib import Path

    from triptych.benchmarks.long_context import naive_score_bytes, run_long_context_backend

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from triptych.commands._common import CLIError, console, print_json
    from triptych.common.io import atomic_write_json

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in ("numpy", "jax")]
    if bad or not backends:
        raise CLIError(f"--backends: expected a comma-separated subset of numpy,jax, got {args.backends!r}")
    t, h, d = args.tokens, args.heads, args.head_dim
    naive = {"fp16": naive_score_bytes(t, h, 2), "fp32": naive_score_bytes(t, h, 4)}
    rows = []
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.json) as progress:
        for backend in backends:
            task = progress.add_task(f"{backend}: heads", total=h)
            spec = {"backend": backend, "tokens": t, "heads": h, "head_dim": d, "causal": args.causal}
            res = run_long_context_backend(spec, on_tick=lambda task=task: progress.advance(task))
            res.update({"tokens": t, "heads": h, "head_dim": d, "causal": args.causal,
                        "naive_scores_fp16_bytes": naive["fp16"], "naive_scores_fp32_bytes": naive["fp32"]})
            rows.append(res)
    atomic_write_json(Path(args.out) / "long_context.json", rows)
    if args.json:
        print_json(rows)
        return 0
    gib = 2.0**30
    console.print(f"One layer of attention, T={t:,} tokens, {h} heads, head size {d}, one sequence, "
                  f"{'causal' if args.causal else 'full'}, float32.")
    console.print(f"Naive score matrix: heads x T x T = {h} x {t:,} x {t:,} = {h * t * t:,} scores = "
                  f"{naive['fp16'] / 1e9:.1f} GB ({naive['fp16'] / gib:.1f} GiB) at 2 bytes, "
                  f"{naive['fp32'] / 1e9:.1f} GB at 4 bytes (formula, for contrast).")
    table = Table(title="Tiled exact attention (measured: peak RSS of a fresh process)")
    for col in ("backend", "tiles", "time s", "peak RSS GiB", "of which inputs+output GiB", "max |err| vs direct"):
        table.add_column(col, justify="left" if col in ("backend", "tiles") else "right")
    for r in rows:
        table.add_row(r["backend"], f"{r['block_q']}x{r['block_k']}", f"{r['seconds']:.1f}",
                      f"{r['peak_rss_bytes'] / gib:.2f}", f"{(r['inputs_bytes'] + r['output_bytes']) / gib:.2f}",
                      f"{r['max_abs_err_vs_direct']:.1e}")
    console.print(table)
    return 0
