"""`python cli.py bench decode`: how fast our engines generate, against Hugging Face, and what physics allows.

SmolLM2-135M-Instruct, float32, batch 1, in one run with the same thread settings for everyone:
  prefill   tokens/s on a --prompt-tokens prompt of real text (Austen, SmolLM2's own tokenizer);
  decode    tokens/s of --new-tokens greedy steps with the KV cache after a short prompt;
for numpy (numpy_impl.llama_decode), jax (jax_impl.llama_decode) and HF LlamaForCausalLM with eager
attention (the reference; `torch-sdpa` and `numpy-concat`, the teaching llama_forward_cached, on
request). Each round runs every backend in turn (interleaved, so a busy spell on a shared machine
hits all of them); the figures are medians over rounds and the ratios are to HF eager.

Bounds beside the figures, measured in the same run:
  decode   a step must read every weight matrix once (the 49152 x 576 head included; the embedding
           lookup reads one row) plus the KV cache, so tokens/s <= copy bandwidth / bytes per token,
           the bandwidth from a large NumPy copy (read + write bytes counted);
  prefill  tokens/s <= matmul peak / FLOPs per token, the peak from a float32 GEMM (NumPy and torch,
           the better), the FLOPs 2 * (layer weights) per token + the head at the last position +
           causal attention 4 * n_layers * H * D * T(T+1)/2.

What we found (profiles on 2 cores, SmolLM2, 512-token prompt), and what was changed:
  - numpy_impl.llama.llama_forward_cached (`numpy-concat`) decoded at ~10 tokens/s against HF's ~15:
    half of its ~100 ms step was Python, not maths: selecting each layer's weights by scanning all
    272 keys (12 ms), input checks on every piece (10 ms), RoPE tables rebuilt per layer; plus the
    cache concatenated (copied) every step and the head computed at every position. llama_decode
    keeps the readable steps and removes those (its docstring lists them): ~20 tokens/s, with the
    matrix-vector products (the weights read once) now most of the step.
  - its prefill spent a third of the time in the plain softmax over (T, T) scores (single-threaded
    passes over the causal upper half too), a sixth in swiglu's overflow-free sigmoid (six passes),
    and a fifth in the head over all 512 positions; now flash.fast_attention, x / (1 + exp(-x)) and
    the head at the last position. What is left is OpenBLAS's GEMMs, about as fast as torch's here.
  - jax: the growing cache of jax_impl/llama.py retraced and recompiled every step; the fixed cache
    compiles once (tests/test_engines.py counts the traces). Unrolling the layers instead of lax.scan
    was slower (6.8 against 12-13 tokens/s: the per-layer cache writes became copies); einsum in
    place of x @ W.T changed nothing; fusing q/k/v and gate/up into one matrix each changed nothing
    either (the 210 matvecs of 30 layers in lax.scan: 14.0 against 14.4 ms, quiet machine).
  - The machine matters more than the code. On 2026-12-03, with another job on the 2 cores (copy
    bandwidth measured 15 GB/s), jax decoded at 12.5 tokens/s (0.72x HF) and numpy at 20.2 (1.17x).
    On 2026-12-04, quiet (24.9-27.7 GB/s), two runs: jax 25.6 / 31.8 tokens/s (1.93x / 1.80x),
    numpy 30.5 / 29.7 (2.29x / 1.69x), HF eager 13.3 / 17.6, bound 46-51; prefill jax 601 / 641
    (1.27x / 1.10x), numpy 484 / 517 (1.02x / 0.89x), HF 475 / 582. JAX lost most to the busy neighbour
    (likely because XLA's threads must meet at every layer), so read the ratios beside the bandwidth that
    the same run measured.
Measurements only: nothing here passes or fails. triptych/commands/bench.py registers the subcommand.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from triptych.common.argtypes import Default, count, output_dir
from triptych.common.console import positive_int as _positive

BACKENDS = ("numpy", "jax", "torch", "torch-sdpa", "numpy-concat")
REFERENCE = "torch"  # HF eager
GOALS = {("numpy", "decode"): 1.0, ("jax", "decode"): 1.5, ("numpy", "prefill"): 0.7, ("jax", "prefill"): 1.0}
DECODE_PROMPT = 16  # tokens before the timed decode steps
POSITIONS = 8192  # SmolLM2-135M's max_position_embeddings: RoPE was trained up to here, no prompt is longer


def register(bsub) -> None:
    d = bsub.add_parser("decode", help="SmolLM2-135M prefill and KV-cache decode tokens/s: numpy, jax, HF eager; "
                                       "bandwidth and matmul bounds")
    d.add_argument("--prompt-tokens", type=count(POSITIONS, why="SmolLM2 has 8,192 positions"), default=512, help="prefill prompt length (default 512)")
    d.add_argument("--new-tokens", type=count(POSITIONS - DECODE_PROMPT, why=f"{DECODE_PROMPT} prompt tokens + these "
                   "fill SmolLM2's 8,192 positions"), default=32, help="timed decode steps (default 32)")
    d.add_argument("--rounds", type=_positive, default=3, help="interleaved rounds; medians shown (default 3)")
    d.add_argument("--backends", default="numpy,jax,torch", help=f"comma-separated subset of {','.join(BACKENDS)}")
    d.add_argument("--threads", type=count(1024), default=None, help="torch and OpenBLAS threads (default: all cores)")
    d.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    d.add_argument("--out", type=output_dir, default=Default("runs/bench"), help="folder for decode.json (the figures)")
    d.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2", help=argparse.SUPPRESS)  # tests
    d.set_defaults(func=run)


def _backends(text: str) -> list[str]:
    from triptych.common.console import CLIError

    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in BACKENDS]
    if bad or not names:
        raise CLIError(f"--backends: expected a comma-separated subset of {','.join(BACKENDS)}, got {text!r}")
    return names if REFERENCE in names else names + [REFERENCE]  # ratios need the reference


def tiny_model():
    """A small random Llama (GQA) for tests of the bench itself."""
    from triptych.common.llama_config import LlamaConfig, init_llama_params

    config = LlamaConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128, block_size=1024)
    return init_llama_params(config, seed=0, std=0.2), config


def austen_ids(n: int) -> np.ndarray:
    """The first n SmolLM2 tokens of Austen's novels. Shapes: -> (1, n) int64"""
    from tokenizers import Tokenizer

    from triptych.bpe.bench import austen_corpus
    from triptych.bpe.smollm2 import tokenizer_json

    tok = Tokenizer.from_file(str(tokenizer_json()))
    ids = tok.encode(austen_corpus(max_bytes=20 * n)).ids[:n]
    return np.array([ids], dtype=np.int64)


def decode_bytes_per_token(config, context: int, itemsize: int = 4) -> dict:
    """Bytes one decode step must read: every weight once (each layer's matrices and norms, the final
    norm, the head; the embedding row looked up is counted as C numbers), and the KV cache of
    `context` positions."""
    from triptych.common.llama_config import llama_param_shapes

    shapes = llama_param_shapes(config)
    weights = sum(int(np.prod(s)) for k, s in shapes.items() if k != "embed.weight")
    head = config.vocab_size * config.d_model
    weights += config.d_model + (head if config.tie_embeddings else 0)  # one embedding row; the tied head
    kv = 2 * config.n_layers * config.n_kv_heads * context * config.d_head
    return {"weights": weights * itemsize, "kv_cache": kv * itemsize, "total": (weights + kv) * itemsize}


def prefill_flops(config, tokens: int) -> float:
    """Useful FLOPs of a prefill that computes the logits at the last position only."""
    C, F, D = config.d_model, config.d_ff, config.d_head
    per_layer = C * config.n_heads * D * 2 + 2 * C * config.n_kv_heads * D + 3 * C * F  # w_q, w_o, w_k, w_v, mlp
    attention = 4.0 * config.n_layers * config.n_heads * D * tokens * (tokens + 1) / 2  # causal QK^T and PV
    return 2.0 * per_layer * config.n_layers * tokens + 2.0 * config.vocab_size * C + attention


def copy_bandwidth(nbytes: int = 256 * 2**20, repeats: int = 3) -> float:
    """Bytes per second of a large NumPy copy, counting what it reads and what it writes."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch the pages first
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return 2.0 * src.nbytes / min(times)


def matmul_peak(n: int = 1024, repeats: int = 3) -> float:
    """float32 GEMM GFLOP/s now, the better of NumPy (OpenBLAS) and torch."""
    import torch

    a, b = (np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    best = 0.0
    for fn in (lambda: a @ b, lambda: ta @ tb):
        fn()
        t = min(_seconds(fn) for _ in range(repeats))
        best = max(best, 2.0 * n**3 / t / 1e9)
    return best


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def set_threads(n: int | None) -> dict:
    """The same thread count for torch and OpenBLAS (XLA:CPU sizes its pool at import: all cores)."""
    import torch
    from threadpoolctl import threadpool_limits

    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")
    return {"torch": torch.get_num_threads(), "blas": n, "xla": "all cores (set at import)",
            "cpu_count": os.cpu_count()}


def _make(backend: str, params, config, max_len: int):
    from triptych.generation.engines import make_engine

    if backend == "torch":
        return make_engine("torch", params, config, max_len=max_len, attn_implementation="eager")
    if backend == "torch-sdpa":
        engine = make_engine("torch", params, config, max_len=max_len, attn_implementation="sdpa")
        engine.name = "torch-sdpa"
        return engine
    return make_engine(backend, params, config, max_len=max_len)


def _decode(engine, prompt, new_tokens: int):
    """Greedy decoding after `prompt`; returns (seconds of the new_tokens steps, the tokens)."""
    token = int(np.argmax(engine.prefill(prompt)))
    tokens = [token]
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        token = int(np.argmax(engine.step(token)))
        tokens.append(token)
    return time.perf_counter() - t0, tokens


def _model_and_prompt(model: str, prompt_tokens: int):
    """(params, config, prompt ids (1, T)): SmolLM2 on Austen text, or a tiny random Llama on random ids."""
    if model == "tiny":
        params, config = tiny_model()
        return params, config, np.random.default_rng(0).integers(0, config.vocab_size, (1, prompt_tokens))
    from triptych.pretrained.smollm2 import load_llama

    params, config = load_llama(dtype="float32")
    return params, config, austen_ids(prompt_tokens)


def _warm_engines(backends, params, config, max_len: int, ids, short, tick) -> dict:
    """Build each backend's engine and warm it up: JAX compiles both prefill shapes and the step here."""
    engines = {}
    for b in backends:
        engines[b] = _make(b, params, config, max_len)
        engines[b].prefill(ids)
        _decode(engines[b], short, 2)
        tick()
    return engines


def _timed_rounds(engines: dict, ids, short, new_tokens: int, rounds: int, tick):
    """Interleaved rounds: the machine's copy bandwidth and matmul peak, then each engine's prefill of
    `ids` and greedy decode after `short`. Returns (prefill seconds, decode seconds, tokens per backend,
    median bandwidth, best peak)."""
    prefill_s = {b: [] for b in engines}
    decode_s = {b: [] for b in engines}
    tokens, bandwidths, peaks = {}, [], []
    for _ in range(rounds):
        bandwidths.append(copy_bandwidth())
        peaks.append(matmul_peak())
        for b, engine in engines.items():
            prefill_s[b].append(_seconds(lambda: engine.prefill(ids)))
            seconds, tokens[b] = _decode(engine, short, new_tokens)
            decode_s[b].append(seconds)
            tick()
    return prefill_s, decode_s, tokens, statistics.median(bandwidths), max(peaks)


def _speed_rows(backends, prompt_tokens: int, new_tokens: int, prefill_s, decode_s, tokens) -> list[dict]:
    """Tokens/s per backend (medians), and each as a ratio to the reference (HF eager)."""
    rows = []
    for b in backends:
        row = {"backend": b, "prefill_tokens_per_s": prompt_tokens / statistics.median(prefill_s[b]),
               "decode_tokens_per_s": new_tokens / statistics.median(decode_s[b]),
               "prefill_seconds": prefill_s[b], "decode_seconds": decode_s[b],
               "same_tokens_as_reference": tokens[b] == tokens[REFERENCE]}
        rows.append(row)
    ref = next(r for r in rows if r["backend"] == REFERENCE)
    for row in rows:
        for kind in ("prefill", "decode"):
            row[f"{kind}_ratio_to_hf"] = row[f"{kind}_tokens_per_s"] / ref[f"{kind}_tokens_per_s"]
    return rows


def _goals(rows: list[dict], backends) -> list[dict]:
    goals = [{"backend": b, "kind": kind, "goal_ratio": g,
              "ratio": next(r[f"{kind}_ratio_to_hf"] for r in rows if r["backend"] == b),
              } for (b, kind), g in GOALS.items() if b in backends]
    for g in goals:
        g["reached"] = g["ratio"] >= g["goal_ratio"]
    return goals


def bench_decode(backends, prompt_tokens: int = 512, new_tokens: int = 32, rounds: int = 3, threads=None,
                 model: str = "smollm2", progress=None) -> dict:
    thread_info = set_threads(threads)
    params, config, ids = _model_and_prompt(model, prompt_tokens)
    prompt_tokens = ids.shape[1]
    short = ids[:, :min(DECODE_PROMPT, prompt_tokens)]
    max_len = max(prompt_tokens, short.shape[1] + new_tokens + 1)
    task = progress.add_task("bench decode", total=len(backends) * (rounds + 1)) if progress else None

    def tick():
        if progress:
            progress.advance(task)

    engines = _warm_engines(backends, params, config, max_len, ids, short, tick)
    prefill_s, decode_s, tokens, bandwidth, peak = _timed_rounds(engines, ids, short, new_tokens, rounds, tick)
    context = short.shape[1] + new_tokens // 2  # the cache a decode step reads, on average
    nbytes = decode_bytes_per_token(config, context)
    flops = prefill_flops(config, prompt_tokens)
    rows = _speed_rows(backends, prompt_tokens, new_tokens, prefill_s, decode_s, tokens)
    return {
        "model": "SmolLM2-135M-Instruct" if model == "smollm2" else "tiny random Llama",
        "config": config.to_dict(), "dtype": "float32", "batch": 1, "rounds": rounds,
        "prompt_tokens": prompt_tokens, "decode_prompt_tokens": short.shape[1], "new_tokens": new_tokens,
        "threads": thread_info, "reference": "torch (HF LlamaForCausalLM, attn_implementation='eager')",
        "copy_bandwidth_bytes_per_s": bandwidth, "decode_bytes_per_token": nbytes,
        "decode_bound_tokens_per_s": bandwidth / nbytes["total"],
        "matmul_peak_gflops": peak, "prefill_flops": flops,
        "prefill_bound_tokens_per_s": peak * 1e9 / (flops / prompt_tokens),
        "rows": rows, "goals": _goals(rows, backends),
    }


def run(args) -> int:
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from triptych.common.console import console, print_json
    from triptych.common.io import atomic_write_json

    backends = _backends(args.backends)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.json) as progress:
        res = bench_decode(backends, args.prompt_tokens, args.new_tokens, args.rounds, args.threads, args.model,
                           progress)
    atomic_write_json(Path(args.out) / "decode.json", res)
    if args.json:
        print_json(res)
        return 0
    table = Table(title=f"{res['model']}, float32, batch 1, median of {res['rounds']} interleaved rounds "
                        f"(threads: torch {res['threads']['torch']}, BLAS {res['threads']['blas']}, XLA all cores)")
    for col in ("backend", f"prefill tok/s ({res['prompt_tokens']})", "vs HF", f"decode tok/s ({res['new_tokens']})",
                "vs HF", "same tokens"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in res["rows"]:
        table.add_row(r["backend"], f"{r['prefill_tokens_per_s']:.0f}", f"{r['prefill_ratio_to_hf']:.2f}x",
                      f"{r['decode_tokens_per_s']:.1f}", f"{r['decode_ratio_to_hf']:.2f}x",
                      "yes" if r["same_tokens_as_reference"] else "[red]no[/]")
    table.add_row("[bold]bound[/]", f"{res['prefill_bound_tokens_per_s']:.0f}", "", f"{res['decode_bound_tokens_per_s']:.1f}",
                  "", "")
    console.print(table)
    b = res["decode_bytes_per_token"]
    console.print(f"decode bound: {b['total'] / 1e6:.0f} MB per token ({b['weights'] / 1e6:.0f} MB weights + "
                  f"{b['kv_cache'] / 1e6:.1f} MB KV cache) / {res['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s copy "
                  f"bandwidth (large NumPy copy, read + write) = {res['decode_bound_tokens_per_s']:.1f} tokens/s")
    console.print(f"prefill bound: {res['prefill_flops'] / 1e9:.0f} GFLOP for {res['prompt_tokens']} tokens / "
                  f"{res['matmul_peak_gflops']:.0f} GFLOP/s matmul peak (float32 GEMM, now) = "
                  f"{res['prefill_bound_tokens_per_s']:.0f} tokens/s")
    for g in res["goals"]:
        mark = "[green]reached[/]" if g["reached"] else "[red]not reached[/]"
        console.print(f"goal {g['backend']} {g['kind']} >= {g['goal_ratio']:.1f}x HF: {g['ratio']:.2f}x, {mark}")
    return 0
