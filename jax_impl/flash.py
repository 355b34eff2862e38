"""Fast and memory-efficient exact attention in JAX; numpy_impl/flash.py explains the maths.

fast_attention  -- one jitted softmax(Q K^T * scale) V that folds the scale into Q, gets the
    softmax denominator from the second matmul (V with a column of ones) instead of a sum over
    the scores, normalises the (T_q, D_v) output rather than the (T_q, T_k) weights, and skips
    writing the weights out unless asked for them. Query rows go in cache-sized blocks unrolled
    at trace time (shapes are static), so under causal masking each block multiplies only the
    keys it can see: ~half the work at T_q = T_k.

flash_attention -- the tiled online softmax. Query blocks go through lax.map; inside each, a
    lax.fori_loop walks the key blocks carrying (running max, running sum, accumulator). Under
    causal masking the loop stops at the diagonal tile, so tiles above it are never computed.
    Its gradient is a jax.custom_vjp whose backward is FlashAttention-2's: it walks key blocks
    (lax.scan) and, for each, the query blocks at or below the diagonal (lax.fori_loop),
    recomputing each tile's probabilities from the saved logsumexp instead of storing them; so
    jax.grad never keeps a (T_q, T_k) array alive.

Both run a few (batch, head) pairs at a time (_per_head): on a CPU, a head's working set stays in
cache, and the heads of one group are independent ops that XLA's runtime runs side by side.

Lengths that are not a multiple of the block size are padded; padded keys are masked out and
padded query rows dropped, so any T works with any block size.
"""
from __future__ import annotations

import math
from functools import partial, reduce

import jax
import jax.numpy as jnp
from jax import lax

from triptych.common.checks import (
    check_mask,
)
from triptych.common.backend_checks import check_blocks, check_flash
from jax_impl._checks import all_finite_each

__all__ = ["fast_attention", "flash_attention"]
__all__ += ["flash_attention_backward"]


def _prepare(q, k, v, mask, scale, causal):
    check_flash(q, k, v, causal, all_finite_each)
    if mask is not None:
        check_mask("mask", mask, tuple(q.shape[:-2]) + (q.shape[-2], k.shape[-2]))
        # Same number of axes as q; size-1 axes stay size 1 (never broadcast out to B*H copies).
        mask = jnp.reshape(mask, (1,) * (q.ndim - mask.ndim) + tuple(mask.shape))
    return mask, float(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)


def _allowed(t_q, t_k, causal, mask, rows, cols):
    """Which (row, col) pairs of a tile may attend: inside the real (unpadded) keys, on or below
    the diagonal if causal, and allowed by the user's mask (already cut to this tile)."""
    ok = cols[None, :] < t_k
    if causal:
        ok = ok & (cols[None, :] <= rows[:, None])
    if mask is not None:
        ok = ok & mask
    return ok


# fast_attention's query rows per block: as many as keep one (rows, T_k) score block near
# _FAST_TILE_BYTES, half of a 1 MiB L2, so the exp and the second matmul read it from cache
# (256 float32 rows at T_k = 512, 64 at T_k = 2048; 2 MiB blocks were slower at T = 2048:
# docs/benchmarks.md). At most _MAX_UNROLLED blocks per head are unrolled; longer queries get
# taller blocks, which keeps compile time bounded (flash_attention is the route for very long
# sequences).
_FAST_TILE_BYTES = 512 * 1024
_MAX_UNROLLED = 32


def _fast_block_rows(t_q: int, t_k: int, itemsize: int) -> int:
    """Query rows per block of fast_attention (see _FAST_TILE_BYTES)."""
    return max(16, _FAST_TILE_BYTES // (t_k * itemsize), -(-t_q // _MAX_UNROLLED))
# Heads per step of the loop over heads. The heads of one step are separate ops with no data
# between them, so XLA's CPU runtime runs them concurrently, one per core (2 beat 1 and 4 per
# step: docs/measurements.md).
_HEADS_PER_STEP = 2


def _per_head(fn, arrays, mask, lead, group=1):
    """fn(*arrays_of_one_head, mask_of_that_head) for every index of the leading (batch, head)
    axes, `group` heads per step of a lax.map. One head's scores fit in cache and XLA spreads that
    head's matmuls over the cores; on a CPU with few cores this beats one batched op over all heads
    whose (B, H, T_q, T_k) intermediates stream through memory several times.

    arrays share the leading axes `lead`; a mask whose leading axes are all 1 is shared by every
    head (closed over, not copied), otherwise it is broadcast and mapped with the arrays."""
    n = math.prod(lead)
    g = group if n % group == 0 else 1
    flat = [jnp.reshape(x, (n // g, g) + x.shape[len(lead):]) for x in arrays]
    if mask is None or all(s == 1 for s in mask.shape[:-2]):
        shared = None if mask is None else jnp.reshape(mask, mask.shape[-2:])
        per = None
    else:
        shared = None
        per = jnp.reshape(jnp.broadcast_to(mask, tuple(lead) + mask.shape[-2:]), (n // g, g) + mask.shape[-2:])

    def step(xs):
        heads, masks = (xs[:-1], xs[-1]) if per is not None else (xs, None)
        # Unrolled in Python: g independent computations, not one batched op.
        outs = [fn(*(x[i] for x in heads), shared if masks is None else masks[i]) for i in range(g)]
        return jax.tree_util.tree_map(lambda *ys: jnp.stack(ys), *outs)

    res = lax.map(step, tuple(flat) + ((per,) if per is not None else ()))
    return jax.tree_util.tree_map(lambda y: jnp.reshape(y, tuple(lead) + y.shape[2:]), res)


@partial(jax.jit, static_argnames=("causal", "need_weights"))
def _fast(q, k, v, mask, scale, causal, need_weights):
    return _per_head(partial(_fast_one, scale=scale, causal=causal, need_weights=need_weights),
                     (q, k, v), mask, q.shape[:-2], group=_HEADS_PER_STEP)


def _fast_one(q, k, v, mask, scale, causal, need_weights):
    """One head: q (T_q, D), k (T_k, D), v (T_k, D_v), mask (T_q or 1, T_k or 1) or None."""
    t_q, t_k = q.shape[0], k.shape[0]
    bq = _fast_block_rows(t_q, t_k, q.dtype.itemsize)
    # Where a query may not attend: the most negative finite value rather than -inf (see below);
    # exp(fill - any real score) is still 0.
    fill = jnp.finfo(q.dtype).min
    v_ones = None if need_weights else jnp.concatenate([v, jnp.ones((t_k, 1), v.dtype)], axis=-1)
    outs, weights = [], []
    for r0 in range(0, t_q, bq):  # a Python loop: every block has static bounds
        r1 = min(t_q, r0 + bq)
        qs = q[r0:r1] * scale  # the scale on (rows, D), not on (rows, T_k)
        # Key ranges of this block, each (c0, c1, compare with the diagonal?). Causal: keys before
        # r0 are seen by every row, keys r0..r1-1 (the diagonal square) by some, later keys by
        # none, so they are never multiplied. Only the square pays for the causal comparison
        # (measured against one select over the whole block: 87.0-89.6 -> 80.8-84.0 ms at B=1,
        # H=12, T=2048 and 45.5-50.3 -> 44.5-49.1 ms at B=8, H=8, T=512).
        if causal:
            split = min(r0, t_k)
            parts = [(0, split, False), (split, min(t_k, r1), True)]
            parts = [(c0, c1, diagonal) for c0, c1, diagonal in parts if c1 > c0]
        else:
            parts = [(0, t_k, False)]
        scores = []
        for c0, c1, diagonal in parts:
            s = qs @ jnp.swapaxes(k[c0:c1], -1, -2)
            tile = None if mask is None else _tile_of(mask, r0, r1, c0, c1)
            if diagonal or tile is not None:
                ok = _allowed(t_q, t_k, diagonal, tile, jnp.arange(r0, r1), jnp.arange(c0, c1))
                s = jnp.where(ok, s, fill)
            scores.append(s)
        # One softmax across the parts: a shared row max, then sums of their exponentials. The
        # max always includes a real score or `fill`, so it is finite: no guard between the max and
        # the exp, which lets XLA fuse max, subtract and exp into one library kernel (a guard here
        # measured 43 -> 57 ms at B=8, H=8, T=512, causal) and the denominator is at least 1.
        row_max = lax.stop_gradient(reduce(jnp.maximum, [jnp.max(s, axis=-1, keepdims=True) for s in scores]))
        ps = [jnp.exp(s - row_max) for s in scores]
        # A fully masked row has max `fill` and exp(0) = 1 everywhere: zero it at the end. (Only a
        # user mask can do that; a causal row always sees key 0.)
        dead = None if mask is None else row_max == fill
        if need_weights:
            denom = sum(jnp.sum(p, axis=-1, keepdims=True) for p in ps)
            ws = [p / denom if dead is None else jnp.where(dead, 0.0, p / denom) for p in ps]
            outs.append(sum(w @ v[c0:c1] for w, (c0, c1, _) in zip(ws, parts)))
            seen = parts[-1][1]
            weights.append(jnp.pad(jnp.concatenate(ws, axis=-1), ((0, 0), (0, t_k - seen))))  # unseen keys: 0
        else:
            # exp(scores) @ [V, 1]: the numerator and, in the last column, the denominator in one
            # matmul instead of a separate sum over the (rows, T_k) tile. Then normalise the
            # (rows, D_v) output, not the (rows, T_k) weights: fewer divisions.
            o = sum(p @ v_ones[c0:c1] for p, (c0, c1, _) in zip(ps, parts))
            o = o[:, :-1] / o[:, -1:]
            outs.append(o if dead is None else jnp.where(dead, 0.0, o))
    out = jnp.concatenate(outs, axis=0)
    return out, (jnp.concatenate(weights, axis=0) if need_weights else None)


def _tile_of(mask, r0, r1, c0, c1):
    """Rows r0..r1-1 and columns c0..c1-1 of a (T_q or 1, T_k or 1) mask; a broadcast (size-1)
    axis stays size 1."""
    rows = slice(r0, r1) if mask.shape[0] != 1 else slice(0, 1)
    cols = slice(c0, c1) if mask.shape[1] != 1 else slice(0, 1)
    return mask[rows, cols]


def fast_attention(q, k, v, mask=None, scale: float | None = None, causal: bool = False, need_weights: bool = False):
    """softmax(Q K^T * scale, masked) V, jitted, without writing the weights unless asked.

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k) -> out (..., T_q, D_v), weights (..., T_q, T_k) or None
    """
    mask, scale = _prepare(q, k, v, mask, scale, causal)
    return _fast(q, k, v, mask, scale, causal, bool(need_weights))


def _pad_to(x, size, axis):
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths)


def _mask_tile(mask, r0, c0, bq, bk):
    """The user's mask cut to one tile; an axis of size 1 (broadcast) is not sliced."""
    if mask is None:
        return None
    if mask.shape[-2] != 1:
        mask = lax.dynamic_slice_in_dim(mask, r0, bq, axis=-2)
    if mask.shape[-1] != 1:
        mask = lax.dynamic_slice_in_dim(mask, c0, bk, axis=-1)
    return mask


def _padded(q, k, v, mask, bq, bk):
    t_q, t_k = q.shape[-2], k.shape[-2]
    nq, nk = -(-t_q // bq), -(-t_k // bk)
    q, k, v = _pad_to(q, nq * bq, -2), _pad_to(k, nk * bk, -2), _pad_to(v, nk * bk, -2)
    if mask is not None:
        if mask.shape[-2] != 1:
            mask = _pad_to(mask, nq * bq, -2)
        if mask.shape[-1] != 1:
            mask = _pad_to(mask, nk * bk, -1)  # padded keys: False
    return q, k, v, mask, nq, nk


def _forward(q, k, v, mask, scale, causal, bq, bk):
    t_q, t_k = q.shape[-2], k.shape[-2]
    lead, d_v = q.shape[:-2], v.shape[-1]
    qp, kp, vp, maskp, nq, nk = _padded(q, k, v, mask, bq, bk)
    qs = qp * scale

    def query_block(iq):
        r0 = iq * bq
        qb = lax.dynamic_slice_in_dim(qs, r0, bq, axis=-2)
        rows = r0 + jnp.arange(bq)

        def key_block(ik, carry):
            m, l, acc = carry
            c0 = ik * bk
            kb = lax.dynamic_slice_in_dim(kp, c0, bk, axis=-2)
            vb = lax.dynamic_slice_in_dim(vp, c0, bk, axis=-2)
            ok = _allowed(t_q, t_k, causal, _mask_tile(maskp, r0, c0, bq, bk), rows, c0 + jnp.arange(bk))
            s = jnp.where(ok, qb @ jnp.swapaxes(kb, -1, -2), -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1, keepdims=True))
            shift = jnp.where(jnp.isneginf(m_new), 0.0, m_new)  # nothing allowed yet: shift by 0
            p = jnp.exp(s - shift)
            rescale = jnp.exp(m - shift)  # old sums were relative to m; now relative to m'
            return m_new, l * rescale + jnp.sum(p, axis=-1, keepdims=True), acc * rescale + p @ vb

        init = (jnp.full(lead + (bq, 1), -jnp.inf, qs.dtype), jnp.zeros(lead + (bq, 1), qs.dtype),
                jnp.zeros(lead + (bq, d_v), qs.dtype))
        # Causal: key blocks starting after this query block's last row are never visited.
        n_keys = jnp.minimum(nk, (r0 + bq + bk - 1) // bk) if causal else nk
        m, l, acc = lax.fori_loop(0, n_keys, key_block, init)
        seen = l > 0.0
        safe_l = jnp.where(seen, l, 1.0)
        return acc / safe_l, jnp.where(seen, m + jnp.log(safe_l), -jnp.inf)[..., 0]

    outs, lses = lax.map(query_block, jnp.arange(nq))  # (nq, ..., bq, D_v), (nq, ..., bq)
    out = jnp.moveaxis(outs, 0, -3).reshape(lead + (nq * bq, d_v))[..., :t_q, :]
    lse = jnp.moveaxis(lses, 0, -2).reshape(lead + (nq * bq,))[..., :t_q]
    return out, lse


def _backward(q, k, v, mask, out, lse, dout, dlse, scale, causal, bq, bk):
    t_q, t_k = q.shape[-2], k.shape[-2]
    qp, kp, vp, maskp, nq, nk = _padded(q, k, v, mask, bq, bk)
    dop = _pad_to(dout, nq * bq, -2)
    # D = rowsum(dO * O): the softmax backward's row term, known before the walk over keys.
    # A cotangent on lse adds dlse * P to dS (d lse / d s = P), folded into the same row term.
    row = _pad_to(jnp.sum(dout * out, axis=-1) - dlse, nq * bq, -1)[..., None]
    # Fully masked rows (lse = -inf): +inf makes exp(S - lse) = 0 there.
    lse_p = _pad_to(jnp.where(jnp.isneginf(lse), jnp.inf, lse), nq * bq, -1)[..., None]

    def key_block(dq, ik):
        c0 = ik * bk
        kb = lax.dynamic_slice_in_dim(kp, c0, bk, axis=-2)
        vb = lax.dynamic_slice_in_dim(vp, c0, bk, axis=-2)
        cols = c0 + jnp.arange(bk)

        def query_block(iq, carry):
            dk_b, dv_b, dq = carry
            r0 = iq * bq
            qb = lax.dynamic_slice_in_dim(qp, r0, bq, axis=-2)
            dob = lax.dynamic_slice_in_dim(dop, r0, bq, axis=-2)
            ok = _allowed(t_q, t_k, causal, _mask_tile(maskp, r0, c0, bq, bk), r0 + jnp.arange(bq), cols)
            s = jnp.where(ok, (qb * scale) @ jnp.swapaxes(kb, -1, -2), -jnp.inf)  # scores, recomputed
            p = jnp.exp(s - lax.dynamic_slice_in_dim(lse_p, r0, bq, axis=-2))  # weights = softmax(s)
            dv_b = dv_b + jnp.swapaxes(p, -1, -2) @ dob  # out = weights v
            dp = dob @ jnp.swapaxes(vb, -1, -2)
            ds = p * (dp - lax.dynamic_slice_in_dim(row, r0, bq, axis=-2)) * scale  # softmax, scale
            dq_b = lax.dynamic_slice_in_dim(dq, r0, bq, axis=-2) + ds @ kb  # scores = q k^T
            dq = lax.dynamic_update_slice_in_dim(dq, dq_b, r0, axis=-2)
            return dk_b + jnp.swapaxes(ds, -1, -2) @ qb, dv_b, dq

        init = (jnp.zeros(kb.shape, kp.dtype), jnp.zeros(vb.shape, vp.dtype), dq)
        first = (c0 // bq) if causal else 0  # causal: earlier query blocks see none of these keys
        dk_b, dv_b, dq = lax.fori_loop(first, nq, query_block, init)
        return dq, (dk_b, dv_b)

    dq, (dks, dvs) = lax.scan(key_block, jnp.zeros_like(qp), jnp.arange(nk))
    lead = q.shape[:-2]
    dk = jnp.moveaxis(dks, 0, -3).reshape(lead + (nk * bk, k.shape[-1]))[..., :t_k, :]
    dv = jnp.moveaxis(dvs, 0, -3).reshape(lead + (nk * bk, v.shape[-1]))[..., :t_k, :]
    return dq[..., :t_q, :], dk, dv


def _forward_heads(q, k, v, mask, scale, causal, bq, bk):
    def one(q_, k_, v_, m_):
        return _forward(q_, k_, v_, m_, scale, causal, bq, bk)

    return _per_head(one, (q, k, v), mask, q.shape[:-2])


def _backward_heads(q, k, v, mask, out, lse, dout, dlse, scale, causal, bq, bk):
    def one(q_, k_, v_, o_, l_, do_, dl_, m_):
        return _backward(q_, k_, v_, m_, o_, l_, do_, dl_, scale, causal, bq, bk)

    return _per_head(one, (q, k, v, out, lse, dout, dlse), mask, q.shape[:-2])


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q, k, v, mask, scale, causal, bq, bk):
    return _forward_heads(q, k, v, mask, scale, causal, bq, bk)


def _flash_fwd(q, k, v, mask, scale, causal, bq, bk):
    out, lse = _forward_heads(q, k, v, mask, scale, causal, bq, bk)
    return (out, lse), (q, k, v, mask, out, lse)  # no (T_q, T_k) residual


def _flash_bwd(scale, causal, bq, bk, res, cotangents):
    q, k, v, mask, out, lse = res
    dout, dlse = cotangents
    dq, dk, dv = _backward_heads(q, k, v, mask, out, lse, dout, dlse, scale, causal, bq, bk)
    return dq, dk, dv, None  # the bool mask has no gradient


_flash.defvjp(_flash_fwd, _flash_bwd)
_flash_jit = jax.jit(_flash, static_argnums=(4, 5, 6, 7))
_backward_jit = jax.jit(_backward_heads, static_argnums=(8, 9, 10, 11))


def flash_attention(q, k, v, mask=None, scale: float | None = None, causal: bool = False,
                    block_q: int = 128, block_k: int = 256):
    """Exact attention in (block_q, block_k) tiles with the online softmax; differentiable with
    jax.grad through the tiled FlashAttention-2 backward.

    Shapes: q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v), mask broadcastable to
            (..., T_q, T_k) -> out (..., T_q, D_v), lse (..., T_q)
    """
    check_blocks(block_q, block_k)
    mask, scale = _prepare(q, k, v, mask, scale, causal)
    # A block longer than the sequence would only add padding to compute.
    return _flash_jit(q, k, v, mask, scale, causal, min(block_q, q.shape[-2]), min(block_k, k.shape[-2]))


def flash_attention_backward(dout, q, k, v, out, lse, mask=None, scale: float | None = None, causal: bool = False,
                             block_q: int = 128, block_k: int = 256):
    """The tiled backward on its own (what jax.grad runs), mirroring numpy_impl's signature.

    Shapes: dout (..., T_q, D_v), q (..., T_q, D), k (..., T_k, D), v (..., T_k, D_v),
            out (..., T_q, D_v), lse (..., T_q) -> dq (..., T_q, D), dk (..., T_k, D), dv (..., T_k, D_v)
    """
    check_blocks(block_q, block_k)
    mask, scale = _prepare(q, k, v, mask, scale, causal)
    return _backward_jit(q, k, v, mask, out, lse, dout, jnp.zeros_like(lse), scale, causal,
                         min(block_q, q.shape[-2]), min(block_k, k.shape[-2]))
