"""Text generation: feed the last block_size characters, sample the next one from
softmax(logits / temperature) (optionally only among the top_k), append, repeat."""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError


def generate(logits_fn, block_size: int, tokenizer, prompt: str, length: int, temperature: float = 0.8,
             top_k: int | None = None, seed: int = 0) -> str:
    """logits_fn: idx (1, T) -> logits (1, T, V). Returns prompt + `length` sampled characters."""
    if length < 0:
        raise InputError(f"length: expected a non-negative integer, got {length}")
    if not temperature > 0:
        raise InputError(f"temperature: expected a positive number, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InputError(f"top_k: expected a positive integer, got {top_k}")
    rng = np.random.default_rng(seed)
    ids = list(tokenizer.encode(prompt if prompt else "\n"))
    for _ in range(length):
        ctx = np.asarray(ids[-block_size:], dtype=np.int64)[None]
        logits = np.asarray(logits_fn(ctx), dtype=np.float64)[0, -1] / temperature
        if top_k is not None and top_k < logits.size:
            cut = np.partition(logits, -top_k)[-top_k]
            logits = np.where(logits < cut, -np.inf, logits)
        probs = np.exp(logits - logits.max())
        ids.append(int(rng.choice(probs.size, p=probs / probs.sum())))
    out = tokenizer.decode(ids)
    return out if prompt else out[1:]
