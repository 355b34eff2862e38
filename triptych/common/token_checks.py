"""The input checks of the language models (numpy_impl, jax_impl and torch_ref llama.py and bert.py,
and the tracers in triptych/pretrained): one function per idea, called by the three backends, so a
bad argument is refused in the same words whichever backend runs.

Each check reads its argument through np.asarray (a JAX or CPU torch array converts without fuss;
token ids are small) and returns nothing or a plain number: the caller keeps its own array type.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_ndim, check_shape

__all__ = ["check_token_ids", "check_count", "check_kv_caches", "check_id_grid"]


def check_token_ids(name: str, idx, vocab_size: int | None = None) -> None:
    """(B, T) integer token ids with T >= 1, in [0, vocab_size) when it is given (JAX clamps an
    index out of range silently and torch fails deep inside an embedding, so the range is checked
    first)."""
    a = np.asarray(idx)
    check_ndim(name, a, 2, "(B, T) token ids")
    if not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    if a.shape[1] == 0:
        raise InputError(f"{name}: expected at least one position, got shape {a.shape}")
    if vocab_size is not None and a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= vocab_size:
            raise InputError(f"{name}: expected token ids in [0, {vocab_size}), got values in [{lo}, {hi}]")


def check_id_grid(name: str, ids, like=None) -> None:
    """BERT's per-token grids (input_ids, token_type_ids, attention_mask): (B, T), and the shape of
    `like` (the input_ids) when it is given."""
    check_ndim(name, ids, 2, "(B, T)")
    if like is not None:
        check_shape(name, ids, tuple(like.shape))


def check_count(name: str, value, low: int, high: int | None = None) -> None:
    """An integer in [low, high] (or >= low): a prefill length, a number of new tokens, a layer."""
    ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low
    if not ok or (high is not None and value > high):
        span = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InputError(f"{name}: expected an integer {span}, got {value!r}")


def check_kv_caches(caches, n_layers: int) -> int:
    """None (nothing decoded yet), or one {"k", "v"} cache per layer, all holding the same number of
    positions; returns that number (t_past, 0 for None).

    Shapes: caches: n_layers {"k": (B, H_kv, T_past, D), "v": the same}
    """
    if caches is None:
        return 0
    if not isinstance(caches, (list, tuple)) or len(caches) != n_layers:
        got = f"{type(caches).__name__} of length {len(caches)}" if hasattr(caches, "__len__") else type(caches).__name__
        raise InputError(f"caches: expected None or a list of n_layers={n_layers} {{'k', 'v'}} caches, got {got}")
    for i, c in enumerate(caches):
        if not isinstance(c, dict) or "k" not in c or "v" not in c or np.ndim(c["k"]) != 4:
            raise InputError(f"caches[{i}]: expected a {{'k', 'v'}} dict of (B, H_kv, T_past, D) arrays, "
                             f"got {type(c).__name__}")
    lengths = sorted({int(c["k"].shape[2]) for c in caches})
    if len(lengths) != 1:
        raise InputError(f"caches: expected every layer's cache to hold the same number of positions, got {lengths}")
    return lengths[0]
