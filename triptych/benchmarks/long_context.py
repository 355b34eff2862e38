"""`bench long-context`: one layer of attention at exercises.md G.2's size (16,384 tokens, 48 heads,
head size 128, one sequence), computed exactly with tiled attention, each backend in a fresh
subprocess so the peak resident memory measured is its own."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

from triptych.benchmarks.attention import JAX_BLOCKS, NUMPY_BLOCKS
from triptych.common.console import CLIError


def naive_score_bytes(tokens: int, heads: int, bytes_per_score: int) -> int:
    """Memory of the full (heads, T, T) score matrix of one sequence: what plain attention holds."""
    return heads * tokens * tokens * bytes_per_score


def long_context_worker(spec: dict) -> dict:
    """Runs in a fresh interpreter. Computes one layer of attention head by head with tiled
    attention, printing 'tick' after each head for the parent's progress bar; returns time,
    peak RSS and an exactness check against direct attention for a few query rows."""
    import resource

    import numpy as np

    backend, t, h, d, causal = spec["backend"], spec["tokens"], spec["heads"], spec["head_dim"], spec["causal"]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        import jax_impl  # noqa: F401
        from jax_impl import flash

        bq, bk = (min(x, t) for x in JAX_BLOCKS)
    else:
        from numpy_impl import flash

        bq, bk = (min(x, t) for x in NUMPY_BLOCKS)
    rss_baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # after imports
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, h, t, d), dtype=np.float32) for _ in range(3))
    out = np.empty_like(q)
    t0 = time.perf_counter()
    for head in range(h):
        sl = (slice(None), slice(head, head + 1))
        if backend == "jax":
            o, _ = flash.flash_attention(jnp.asarray(q[sl]), jnp.asarray(k[sl]), jnp.asarray(v[sl]), causal=causal,
                                         block_q=bq, block_k=bk)
            out[sl] = np.asarray(jax.block_until_ready(o))
        else:
            out[sl], _ = flash.flash_attention(q[sl], k[sl], v[sl], causal=causal, block_q=bq, block_k=bk)
        print("tick", flush=True)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Exactness: a few query rows of a few heads by the textbook formula in float64.
    err = 0.0
    for head in (0, h - 1):
        for row in sorted({0, t // 3, t - 1}):
            s = (k[0, head].astype(np.float64) @ q[0, head, row].astype(np.float64)) / math.sqrt(d)
            if causal:
                s[row + 1:] = -np.inf
            p = np.exp(s - s.max())
            ref = (p / p.sum()) @ v[0, head].astype(np.float64)
            err = max(err, float(np.max(np.abs(out[0, head, row] - ref))))
    inputs = 3 * q.nbytes
    return {"backend": backend, "seconds": round(seconds, 2), "peak_rss_bytes": int(peak),
            "rss_after_imports_bytes": int(rss_baseline), "inputs_bytes": int(inputs), "output_bytes": int(out.nbytes),
            "block_q": bq, "block_k": bk, "max_abs_err_vs_direct": err}


def _worker_main() -> None:
    spec = json.loads(sys.argv[1])
    print("result " + json.dumps(long_context_worker(spec)), flush=True)


def run_long_context_backend(spec: dict, on_tick=None) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, "-c", "from triptych.benchmarks.long_context import _worker_main; _worker_main()", json.dumps(spec)]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    result = None
    try:
        for line in proc.stdout:
            if line.startswith("tick") and on_tick:
                on_tick()
            elif line.startswith("result "):
                result = json.loads(line[len("result "):])
        stderr = proc.stderr.read()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0 or result is None:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        raise CLIError(f"long-context {spec['backend']} worker failed (exit {proc.returncode}): {last}")
    return result
