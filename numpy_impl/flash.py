"""Fast and memory-efficient exact attention in NumPy: the same numbers as attention.py, computed
in cache-sized blocks on every core.

Two routes to the SAME softmax(Q K^T * scale, masked) V:

fast_attention  -- the whole key axis at once, one block of query rows at a time. Each block's
    (rows, T_k) score tile stays in cache while it is scaled, masked, exponentiated and normalised
    in place (float32 stays float32), and blocks run on a small thread pool: NumPy's ufuncs and
    BLAS release the GIL, so two workers keep two cores busy. Two passes over the tile are saved:
    the softmax shift is skipped when no row max is large enough for exp to overflow (softmax is
    unchanged by any shift), and the denominator comes out of the second matmul, exp(S) [V, 1].
    attention.scaled_dot_product_attention(kernel="fast") calls this; the step-by-step functions
    there remain the readable definition, tested equal.

flash_attention -- tiles over keys too, with the ONLINE softmax (FlashAttention, Dao et al. 2022;
    FlashAttention-2, Dao 2023). A query block walks the key blocks keeping, per row,
        m  running max of the scores seen so far     (the softmax shift)
        l  running sum of exp(score - m)              (the softmax denominator)
        acc running sum of exp(score - m) v           (the unnormalised output)
    When a new tile raises the max from m to m', the old sums are rescaled by exp(m - m'), so the
    result is exact, not an approximation. Memory is O(block_q * block_k) per worker instead of
    O(T_q * T_k): the only per-row thing kept for the backward is the logsumexp m + log(l).
    flash_attention_backward recomputes each tile's probabilities from that logsumexp
    (P = exp(S - lse)) instead of storing them.

Causal attention skips every tile that lies wholly above the diagonal (half the work for T_q = T_k).
Masks follow the project convention (bool, True = may attend); a fully masked query row gets zero
output, logsumexp -inf, and zero gradients, never NaN.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from triptych.common.checks import (
    check_mask,
)
from triptych.common.backend_checks import check_blocks, check_flash, numpy_finite_each

__all__ = ["fast_attention", "flash_attention"]
__all__ += ["flash_attention_backward"]

# One worker per core, at most 8.
_N_WORKERS = max(1, min(8, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_blas = None


# Below this many multiply-adds a call is over before a thread pool pays for itself.
_PARALLEL_MIN_WORK = 1 << 22


def _run_parallel(task, items, work: int) -> None:
    """Run task(item) for every item on the thread pool, with BLAS held to one thread per worker
    (OpenBLAS's own threads on top of ours would fight for the same cores)."""
    global _pool, _blas
    items = list(items)
    if _N_WORKERS == 1 or len(items) == 1 or work < _PARALLEL_MIN_WORK:
        for it in items:
            task(it)
        return
    if _pool is None:
        from threadpoolctl import ThreadpoolController

        _pool = ThreadPoolExecutor(_N_WORKERS, thread_name_prefix="triptych-attn")
        _blas = ThreadpoolController()
    # Interleaved chunks, so causal blocks (cheap at the top, dear at the bottom) split evenly.
    chunks = [items[w::_N_WORKERS] for w in range(_N_WORKERS)]
    with _blas.limit(limits=1, user_api="blas"):
        for f in [_pool.submit(lambda c=c: [task(it) for it in c]) for c in chunks]:
            f.result()  # re-raises a worker's exception here


def _prepare(q, k, v, mask, scale, causal):
    """Flatten the leading axes to one of length N and make the mask indexable per (n, rows, cols)
    without materialising its broadcast (a (T_q, T_k) causal mask is not copied B*H times)."""
    check_flash(q, k, v, causal, numpy_finite_each)
    lead = q.shape[:-2]
    t_q, t_k = q.shape[-2], k.shape[-2]
    n = math.prod(lead)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    dtype = np.result_type(q, k, v)
    q3 = np.ascontiguousarray(q.reshape(n, t_q, q.shape[-1]), dtype=dtype)
    k3 = np.ascontiguousarray(k.reshape(n, t_k, k.shape[-1]), dtype=dtype)
    v3 = np.ascontiguousarray(v.reshape(n, t_k, v.shape[-1]), dtype=dtype)
    mask_at = None
    if mask is not None:
        check_mask("mask", mask, tuple(lead) + (t_q, t_k))
        full = np.broadcast_to(mask, tuple(lead) + (t_q, t_k))  # a view: strides 0 where broadcast
        index = np.unravel_index(np.arange(n), lead) if lead else None

        def mask_at(i, rows, cols):
            return full[tuple(ix[i] for ix in index) + (rows, cols)] if lead else full[rows, cols]

    return q3, k3, v3, mask_at, dtype.type(scale), n, t_q, t_k


def _block_rows(t_k: int, itemsize: int) -> int:
    """Query rows per block so one (rows, T_k) score tile is ~2 MiB, at most 512 rows. Taller
    blocks mean fewer, taller matmuls (OpenBLAS packs all T_k keys once per block, so short blocks
    spend a larger share re-packing them) while the tile still sits in the shared L3.
    (The measurement that chose 2 MiB: docs/measurements.md.)"""
    return int(max(16, min(512, (2 * 1024 * 1024) // max(1, t_k * itemsize))))


def _causal_keys(r0: int, r1: int, t_k: int) -> int:
    """Keys visible to query rows r0..r1-1 under causal masking (key j <= query i): 0..r1-1."""
    return min(t_k, r1)


def _masked_fill(s, i, r0, r1, c1, mask_at, causal) -> None:
    """Put -inf where the query may not attend (user mask and/or causal), in place on the tile."""
    if mask_at is not None:
        np.copyto(s, -np.inf, where=~mask_at(i, slice(r0, r1), slice(0, c1)))
    if causal and c1 > r0 + 1:
        # Keys before r0 are visible to every row of the block: only the diagonal square
        # (keys r0..c1-1) holds keys later than some row, so only it is compared and filled.
        rows = np.arange(r0, r1)[:, None]
        cols = np.arange(r0, c1)[None, :]
        np.copyto(s[:, r0:c1], -np.inf, where=cols > rows)


def _safe_row_max(dtype, t_k: int) -> float:
    """How far from 0 a row's largest score may lie for exp(scores) to need no shift: its largest
    term e^m and a sum of T_k terms stay finite, and e^-m stays far above the smallest normal
    number, so what underflows is below the dtype's precision relative to the largest term.
    Half of log(largest float / T_k): 40 for float32 at T_k = 2048, 350 for float64."""
    return 0.5 * (math.log(float(np.finfo(dtype).max)) - math.log(t_k))


def _exp_shifted(s: np.ndarray, safe: float) -> None:
    """s <- exp(s - shift) in place, row by row. softmax(s) = exp(s - c) / sum(exp(s - c)) for any
    shift c; the usual c is the row max, which keeps exp from overflowing. When every row max
    lies within `safe` of 0, c = 0 is as accurate and saves a pass over the tile; otherwise the
    shift is the row max (0 for a fully masked row: -inf - -inf would be NaN)."""
    row_max = s.max(axis=-1, keepdims=True)
    if not (-safe < row_max.min() and row_max.max() < safe):
        row_max[np.isneginf(row_max)] = 0.0
        np.subtract(s, row_max, out=s)
    np.exp(s, out=s)  # exp(-inf) = 0 where masked


def fast_attention(q, k, v, mask=None, scale: float | None = None, causal: bool = False, need_weights: bool = False):
    """softmax(Q K^T * scale, masked) V with cache-sized query blocks on a thread pool.

    Same numbers as attention.scaled_dot_product_attention (tested equal); float32 stays float32.
    With need_weights the (…, T_q, T_k) weights are written too (that is what the teaching
    function returns); without, each block's tile is scratch space and the output is all that
    leaves, as in torch's F.scaled_dot_product_attention.

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k) -> out (..., T_q, D_v), weights (..., T_q, T_k) or None
    """
    q3, k3, v3, mask_at, scale, n, t_q, t_k = _prepare(q, k, v, mask, scale, causal)
    d_v = v3.shape[-1]
    out = np.empty((n, t_q, d_v), dtype=q3.dtype)
    weights = np.zeros((n, t_q, t_k), dtype=q3.dtype) if need_weights else None
    if weights is None:
        # V with a column of ones: exp(scores) @ [V, 1] gives the numerator and, in its last
        # column, the softmax denominator, so no separate pass sums the (rows, T_k) tile.
        v_ones = np.empty((n, t_k, d_v + 1), dtype=q3.dtype)
        v_ones[..., :d_v] = v3
        v_ones[..., d_v] = 1.0
    rows = _block_rows(t_k, q3.dtype.itemsize)
    if causal:
        # A block of R rows still computes ~R^2/2 scores above the diagonal, which get masked:
        # shorter blocks skip more (128 rows beat 512 and 64: docs/measurements.md).
        rows = min(rows, 128)

    def block(task):
        i, r0 = task
        r1 = min(t_q, r0 + rows)
        c1 = _causal_keys(r0, r1, t_k) if causal else t_k  # keys past c1 are masked for every row
        # Folding the scale into the (rows, D) queries costs rows*D multiplies, not rows*T_k.
        s = q3[i, r0:r1] * scale
        s = np.matmul(s, k3[i, :c1].T, out=None if weights is None else weights[i, r0:r1, :c1])
        _masked_fill(s, i, r0, r1, c1, mask_at, causal)
        _exp_shifted(s, safe)
        if weights is None:
            # Normalise the (rows, D_v) output instead of the (rows, T_k) tile: fewer divisions.
            numer_denom = s @ v_ones[i, :c1]
            denom = numer_denom[:, d_v:]
            denom[denom == 0.0] = 1.0  # fully masked row: output stays 0 instead of 0/0
            np.divide(numer_denom[:, :d_v], denom, out=out[i, r0:r1])
        else:
            denom = s.sum(axis=-1, keepdims=True)
            denom[denom == 0.0] = 1.0  # fully masked row: weights stay 0 instead of 0/0
            s /= denom
            np.matmul(s, v3[i, :c1], out=out[i, r0:r1])

    safe = _safe_row_max(q3.dtype, t_k)
    work = n * t_q * t_k * (q3.shape[-1] + d_v)
    _run_parallel(block, [(i, r0) for i in range(n) for r0 in range(0, t_q, rows)], work)
    lead = q.shape[:-2]
    out = out.reshape(lead + (t_q, v3.shape[-1]))
    return out, (None if weights is None else weights.reshape(lead + (t_q, t_k)))


def flash_attention(q, k, v, mask=None, scale: float | None = None, causal: bool = False,
                    block_q: int = 128, block_k: int = 256):
    """Exact attention in (block_q, block_k) tiles with the online softmax; never holds more than
    one score tile per worker.

    Returns the output and the per-row logsumexp of the scaled, masked scores (-inf for a fully
    masked row), which is all flash_attention_backward needs besides the inputs.

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k) -> out (..., T_q, D_v), lse (..., T_q)
    """
    check_blocks(block_q, block_k)
    q3, k3, v3, mask_at, scale, n, t_q, t_k = _prepare(q, k, v, mask, scale, causal)
    out = np.empty((n, t_q, v3.shape[-1]), dtype=q3.dtype)
    lse = np.empty((n, t_q), dtype=q3.dtype)

    def query_block(task):
        i, r0 = task
        r1 = min(t_q, r0 + block_q)
        qs = q3[i, r0:r1] * scale
        m = np.full((r1 - r0, 1), -np.inf, dtype=q3.dtype)  # running max
        l = np.zeros((r1 - r0, 1), dtype=q3.dtype)  # running denominator
        acc = np.zeros((r1 - r0, v3.shape[-1]), dtype=q3.dtype)  # running numerator
        c_end = _causal_keys(r0, r1, t_k) if causal else t_k  # causal: later key tiles are skipped
        for c0 in range(0, c_end, block_k):
            c1 = min(c_end, c0 + block_k)
            s = qs @ k3[i, c0:c1].T
            if mask_at is not None:
                np.copyto(s, -np.inf, where=~mask_at(i, slice(r0, r1), slice(c0, c1)))
            if causal and c1 > r0 + 1:
                np.copyto(s, -np.inf, where=np.arange(c0, c1)[None, :] > np.arange(r0, r1)[:, None])
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))
            shift = np.where(np.isneginf(m_new), 0.0, m_new).astype(q3.dtype)  # all masked so far
            rescale = np.exp(m - shift)  # exp(-inf) = 0 on the first tile: nothing to rescale yet
            np.subtract(s, shift, out=s)
            np.exp(s, out=s)  # the tile's unnormalised probabilities exp(S - m')
            l = l * rescale + s.sum(axis=-1, keepdims=True)
            acc *= rescale
            acc += s @ v3[i, c0:c1]
            m = m_new
        seen = l > 0.0
        out[i, r0:r1] = acc / np.where(seen, l, 1.0)  # fully masked row: 0 / 1 = 0
        with np.errstate(divide="ignore"):
            lse[i, r0:r1] = np.where(seen, m + np.log(np.where(seen, l, 1.0)), -np.inf)[:, 0]

    work = n * t_q * t_k * (q3.shape[-1] + v3.shape[-1])
    _run_parallel(query_block, [(i, r0) for i in range(n) for r0 in range(0, t_q, block_q)], work)
    lead = q.shape[:-2]
    return out.reshape(lead + (t_q, v3.shape[-1])), lse.reshape(lead + (t_q,))


def flash_attention_backward(dout, q, k, v, out, lse, mask=None, scale: float | None = None, causal: bool = False,
                             block_q: int = 128, block_k: int = 256):
    """Gradients of flash_attention with respect to q, k and v, tile by tile (FlashAttention-2).

    Each tile's probabilities are recomputed from the saved logsumexp, P = exp(S - lse), so no
    (T_q, T_k) array is ever stored. With dP = dO V^T, the softmax backward per row is
    dS = P * (dP - D) where D = rowsum(dP * P) = rowsum(dO * O) -- cheaper, and known before
    the walk over keys starts. Then dQ += dS K * scale, dK += dS^T Q * scale, dV += P^T dO.
    Workers own disjoint key blocks, so their dK, dV writes never collide; each keeps its own dQ.

    Shapes: dout (..., T_q, D_v), q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v),
            out (..., T_q, D_v), lse (..., T_q) -> dq (..., T_q, D), dk (..., T_k, D), dv (..., T_k, D_v)
    """
    check_blocks(block_q, block_k)
    q3, k3, v3, mask_at, scale, n, t_q, t_k = _prepare(q, k, v, mask, scale, causal)
    do3 = np.asarray(dout, dtype=q3.dtype).reshape(n, t_q, v3.shape[-1])
    o3 = np.asarray(out, dtype=q3.dtype).reshape(n, t_q, v3.shape[-1])
    # A fully masked row has lse = -inf; +inf there makes exp(S - lse) = 0 for every key.
    lse3 = np.asarray(lse, dtype=q3.dtype).reshape(n, t_q, 1)
    lse3 = np.where(np.isneginf(lse3), np.inf, lse3)
    d_row = np.sum(do3 * o3, axis=-1, keepdims=True)  # D = rowsum(dO * O)
    dk = np.zeros_like(k3)
    dv = np.zeros_like(v3)
    dq_parts = [np.zeros_like(q3) for _ in range(_N_WORKERS)]
    tasks = [(i, c0) for i in range(n) for c0 in range(0, t_k, block_k)]
    owner = {task: w for w in range(_N_WORKERS) for task in tasks[w::_N_WORKERS]}

    def key_block(task):
        i, c0 = task
        c1 = min(t_k, c0 + block_k)
        dq = dq_parts[owner[task]]
        r_start = (c0 // block_q) * block_q if causal else 0  # causal: earlier query tiles see none of these keys
        for r0 in range(r_start, t_q, block_q):
            r1 = min(t_q, r0 + block_q)
            s = (q3[i, r0:r1] * scale) @ k3[i, c0:c1].T  # recompute the scores (scores = q k^T * scale)
            if mask_at is not None:
                np.copyto(s, -np.inf, where=~mask_at(i, slice(r0, r1), slice(c0, c1)))
            if causal and c1 > r0 + 1:
                np.copyto(s, -np.inf, where=np.arange(c0, c1)[None, :] > np.arange(r0, r1)[:, None])
            p = np.exp(s - lse3[i, r0:r1])  # weights = softmax(scores), recomputed, not stored
            dv[i, c0:c1] += p.T @ do3[i, r0:r1]  # out = weights v
            dp = do3[i, r0:r1] @ v3[i, c0:c1].T
            ds = p * (dp - d_row[i, r0:r1])  # softmax backward
            ds *= scale  # scores were scaled
            dq[i, r0:r1] += ds @ k3[i, c0:c1]  # scores = q k^T
            dk[i, c0:c1] += ds.T @ q3[i, r0:r1]

    _run_parallel(key_block, tasks, 2 * n * t_q * t_k * (q3.shape[-1] + v3.shape[-1]))
    dq = dq_parts[0]
    for part in dq_parts[1:]:
        dq += part
    lead = q.shape[:-2]
    return dq.reshape(q.shape), dk.reshape(lead + k3.shape[-2:]), dv.reshape(lead + v3.shape[-2:])
