"""The attention benchmark behind `bench attention` (triptych/commands/bench.py prints it): softmax(Q K^T / sqrt(d)) V
in NumPy, JAX and torch SDPA, float32, forward and forward+backward, interleaved rounds, medians,
and the matmul peak of the machine it runs on, measured in the same run.

FLOP counts are the useful matmul work, the convention of the FlashAttention papers:
forward 4*B*H*T_q*T_k*d (Q K^T and P V), forward+backward 3x that (dV, dP, dQ, dK add four more
matmuls); causal attention counts half. Recomputation in a tiled backward is not counted as work.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from types import SimpleNamespace

SHAPES = [(8, 8, 512, 64), (1, 12, 2048, 64)]
# Tile sizes used by the benchmarks (chosen by measurement: docs/measurements.md).
NUMPY_BLOCKS = (256, 512)
JAX_BLOCKS = (512, 512)


def attention_flops(b: int, h: int, t_q: int, t_k: int, d: int, causal: bool, pass_: str) -> float:
    """Useful matmul FLOPs (see the module docstring)."""
    fwd = 4.0 * b * h * t_q * t_k * d * (0.5 if causal else 1.0)
    return fwd if pass_ == "forward" else 3.0 * fwd


def measure_matmul_peak(repeats: int, n: int = 2048) -> dict:
    """float32 GEMM throughput of the machine running it, now, by NumPy (OpenBLAS) and torch; the larger is
    the peak every row is compared with."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    res = {}
    for name, fn in (("numpy", lambda: a @ b), ("torch", lambda: ta @ tb)):
        fn()
        ms = statistics.median(_time_once(fn) for _ in range(max(3, repeats)))
        res[name] = 2.0 * n**3 / (ms * 1e-3) / 1e9
    return {"n": n, "gflops": res, "peak_gflops": max(res.values())}


def _time_once(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _jax_sync(x):
    import jax

    return jax.block_until_ready(x)


def _inputs(b, h, t, d, causal, seed):
    """The same float32 q, k, v, dout (and mask) as NumPy arrays, torch tensors and JAX arrays."""
    import jax.numpy as jnp
    import numpy as np
    import torch

    import jax_impl  # noqa: F401  (x64 available; our inputs stay float32)
    from numpy_impl.masks import make_causal_mask

    rng = np.random.default_rng(seed)
    q, k, v, dout = (rng.standard_normal((b, h, t, d), dtype=np.float32) for _ in range(4))
    mask = make_causal_mask(t) if causal else None
    return SimpleNamespace(q=q, k=k, v=v, dout=dout, mask=mask, causal=causal, scale=1.0 / math.sqrt(d),
                           t=[torch.from_numpy(x) for x in (q, k, v, dout)],
                           j=[jnp.asarray(x) for x in (q, k, v, dout)],
                           jmask=None if mask is None else jnp.asarray(mask))


def _torch_candidates(x):
    import torch.nn.functional as F

    tq, tk, tv, tdo = x.t

    def backward():
        xs = [a.detach().requires_grad_() for a in (tq, tk, tv)]
        F.scaled_dot_product_attention(*xs, is_causal=x.causal).backward(tdo)
        return [a.grad for a in xs]

    return {("torch SDPA", "forward"): lambda: F.scaled_dot_product_attention(tq, tk, tv, is_causal=x.causal),
            ("torch SDPA", "backward"): backward}


def _numpy_candidates(x):
    from numpy_impl import attention as natt
    from numpy_impl import flash as nflash

    q, k, v, dout, mask, causal, scale = x.q, x.k, x.v, x.dout, x.mask, x.causal, x.scale
    nbq, nbk = NUMPY_BLOCKS

    def readable_forward():
        weights = natt.attn_softmax(natt.attn_scaled(natt.pairwise_similarities(q, k), scale), mask)
        return natt.compute_outputs(weights, v), weights

    def readable_backward():
        _, weights = readable_forward()
        return natt.scaled_dot_product_attention_backward(dout, q, k, v, weights, scale)

    def flash_backward():
        out, lse = nflash.flash_attention(q, k, v, causal=causal, block_q=nbq, block_k=nbk)
        return nflash.flash_attention_backward(dout, q, k, v, out, lse, causal=causal, block_q=nbq, block_k=nbk)

    return {
        ("numpy readable", "forward"): readable_forward,
        ("numpy sdpa fast", "forward"): lambda: natt.scaled_dot_product_attention(q, k, v, mask, kernel="fast"),
        ("numpy fast", "forward"): lambda: nflash.fast_attention(q, k, v, causal=causal),
        ("numpy flash", "forward"): lambda: nflash.flash_attention(q, k, v, causal=causal, block_q=nbq, block_k=nbk),
        ("numpy readable", "backward"): readable_backward,
        ("numpy flash", "backward"): flash_backward,
    }


def _jax_candidates(x):
    import jax

    from jax_impl import attention as jatt
    from jax_impl import flash as jflash

    (jq, jk, jv, jdo), jmask, causal, scale = x.j, x.jmask, x.causal, x.scale
    jbq, jbk = JAX_BLOCKS

    # jitted gradient functions, built once: the timed call is the warm, compiled one.
    def vjp_of(fwd):
        @jax.jit
        def run(q_, k_, v_, do_):
            _, pullback = jax.vjp(fwd, q_, k_, v_)
            return pullback(do_)

        return lambda: _jax_sync(run(jq, jk, jv, jdo))

    def sdpa_fast(q_, k_, v_):
        return jatt.scaled_dot_product_attention(q_, k_, v_, jmask, kernel="fast")

    def flash(q_, k_, v_):
        return jflash.flash_attention(q_, k_, v_, causal=causal, block_q=jbq, block_k=jbk)

    dots = _jax_matmuls_only(causal)
    # "jax jit": the plain jitted steps (kernel="steps"); "jax sdpa fast":
    # jax_impl.attention.scaled_dot_product_attention(kernel="fast"), weights included.
    return {
        ("jax jit", "forward"): lambda: _jax_sync(jatt._sdpa(jq, jk, jv, jmask, scale)),
        ("jax sdpa fast", "forward"): lambda: _jax_sync(sdpa_fast(jq, jk, jv)),
        ("jax fast", "forward"): lambda: _jax_sync(jflash.fast_attention(jq, jk, jv, causal=causal)),
        ("jax flash", "forward"): lambda: _jax_sync(flash(jq, jk, jv)),
        ("jax matmuls only (bound)", "forward"): lambda: _jax_sync(dots(jq, jk, jv)),
        ("jax jit", "backward"): vjp_of(lambda q_, k_, v_: jatt._sdpa(q_, k_, v_, jmask, scale)[0]),
        ("jax sdpa fast", "backward"): vjp_of(lambda q_, k_, v_: sdpa_fast(q_, k_, v_)[0]),
        ("jax fast", "backward"): vjp_of(lambda q_, k_, v_: jflash.fast_attention(q_, k_, v_, causal=causal)[0]),
        ("jax flash", "backward"): vjp_of(lambda q_, k_, v_: flash(q_, k_, v_)[0]),
    }


def _candidates(b, h, t, d, causal, seed=0):
    """(backend, pass) -> a zero-argument callable running it once on float32 inputs: every forward
    row (torch, NumPy, JAX), then every backward row, in that order."""
    x = _inputs(b, h, t, d, causal, seed)
    parts = (_torch_candidates(x), _numpy_candidates(x), _jax_candidates(x))
    return {key: run for pass_ in ("forward", "backward") for part in parts for key, run in part.items()
            if key[1] == pass_}


def _jax_matmuls_only(causal: bool):
    """A bound, not attention: jax_impl's fast_attention with the softmax taken out, leaving its
    two matmuls per block (Q K^T, then that times V) in the same blocks and loop. If this row is
    slower than 0.9x torch SDPA, no JAX softmax on top can reach 0.9x on the machine measured."""
    import jax
    import jax.numpy as jnp

    from jax_impl import flash as jflash

    def one(q, k, v, _mask):
        t_q, t_k = q.shape[0], k.shape[0]
        bq = jflash._fast_block_rows(t_q, t_k, q.dtype.itemsize)
        outs = []
        for r0 in range(0, t_q, bq):
            r1 = min(t_q, r0 + bq)
            c1 = min(t_k, r1) if causal else t_k
            outs.append((q[r0:r1] @ k[:c1].T) @ v[:c1])
        return jnp.concatenate(outs, axis=0)

    return jax.jit(lambda q, k, v: jflash._per_head(one, (q, k, v), None, q.shape[:-2], group=jflash._HEADS_PER_STEP))


def bench_attention(shapes, repeats: int, causal_values=(False, True), peak_size: int = 2048,
                    progress=None) -> tuple[list[dict], dict]:
    """Time every (shape, causal, pass, backend); calls are interleaved round-robin so load from
    anything else on the machine falls on all backends alike. Each timed call follows an untimed
    call of the same function, so no backend pays for the one before it (caches holding the other
    backend's arrays, its thread pool still spinning: timing straight after the previous backend
    made our rows 10-16% slower, docs/measurements.md). The GEMM that
    defines the peak joins every round too, and the peak is its best median over the run: measured
    once at the start, a busy moment would make every later row look faster than the machine."""
    import numpy as np
    import torch

    peak = measure_matmul_peak(repeats, peak_size)
    gemm_a, gemm_b = (torch.from_numpy(np.random.default_rng(1).standard_normal((peak_size, peak_size),
                                                                               dtype=np.float32)) for _ in range(2))
    gemm_gflops = [peak["peak_gflops"]]
    rows = []
    groups = [(s, c) for s in shapes for c in causal_values]
    task = progress.add_task("bench attention", total=len(groups) * (repeats + 1)) if progress else None
    for shape, causal in groups:
        b, h, t, d = shape
        fns = _candidates(b, h, t, d, causal)
        for fn in fns.values():  # warm-up: JAX compiles, allocators and thread pools start
            fn()
        if progress:
            progress.advance(task)
        times = {key: [] for key in fns}
        gemm_ms = []
        for _ in range(repeats):
            gemm_a @ gemm_b
            gemm_ms.append(_time_once(lambda: gemm_a @ gemm_b))
            for key, fn in fns.items():
                fn()  # untimed: settle this backend's caches and threads first
                times[key].append(_time_once(fn))
            if progress:
                progress.advance(task)
        gemm_gflops.append(2.0 * peak_size**3 / (statistics.median(gemm_ms) * 1e-3) / 1e9)
        for (backend, pass_), ts in times.items():
            ms = statistics.median(ts)
            gflops = attention_flops(b, h, t, t, d, causal, pass_) / (ms * 1e-3) / 1e9
            torch_ms = statistics.median(times[("torch SDPA", pass_)])
            rows.append({
                "shape": [b, h, t, d],
                "causal": causal,
                "pass": pass_,
                "backend": backend,
                "ms": ms,
                "gflops": gflops,
                "ratio_to_torch": torch_ms / ms,
            })
    peak["peak_gflops"] = max(gemm_gflops)
    peak["gemm_gflops_per_group"] = gemm_gflops[1:]
    for row in rows:
        row["pct_peak"] = 100.0 * row["gflops"] / peak["peak_gflops"]
    return rows, peak


def shape_label(shape) -> str:
    b, h, t, d = shape
    return f"B={b} H={h} T={t} d={d}"


def save_ratio_plot(rows: list[dict], path) -> None:
    """Horizontal bars of throughput relative to torch SDPA, one panel per pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from triptych.common.io import atomic_save

    passes = ["forward", "backward"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(rows) / 2 + 2.5), sharex=False)
    for ax, pass_ in zip(axes, passes):
        sel = [r for r in rows if r["pass"] == pass_ and r["backend"] != "torch SDPA"]
        labels = [f"{r['backend']} | {shape_label(r['shape'])}{' causal' if r['causal'] else ''}" for r in sel]
        ratios = [r["ratio_to_torch"] for r in sel]
        colors = ["tab:blue" if r["backend"].startswith("numpy") else "tab:orange" for r in sel]
        ax.barh(range(len(sel)), ratios, color=colors)
        ax.set_yticks(range(len(sel)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", lw=1, label="torch SDPA")
        if pass_ == "forward":
            ax.axvline(0.5, color="tab:blue", ls="--", lw=1, label="NumPy goal 0.5")
            ax.axvline(0.9, color="tab:orange", ls="--", lw=1, label="JAX goal 0.9")
        ax.set_xlabel("throughput / torch SDPA (torch ms / backend ms)")
        ax.set_title("forward" if pass_ == "forward" else "forward + backward")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Attention, float32 (higher is faster)")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def thread_info() -> dict:
    return {"cpu_count": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
