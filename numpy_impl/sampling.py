"""The distribution a language model samples its next token from, after the usual filters:

    p = softmax(filter(logits / temperature))

    temperature   divide the logits: < 1 sharpens the distribution, > 1 flattens it
    top_k         keep the k largest logits (every logit equal to the k-th survives too)
    top_p         keep the smallest set of most likely tokens whose probability reaches top_p
                  ("nucleus" sampling, Holtzman et al. 2020), measured after temperature and top-k

A filtered token gets the logit -inf, so its probability is exactly 0. The order (temperature, then
top-k, then top-p) and the tie rules are Hugging Face's TemperatureLogitsWarper, TopKLogitsWarper
and TopPLogitsWarper, the referee in torch_ref/sampling.py; parity_tests/test_sampling.py compares
the probabilities, not samples. Drawing the token from p is triptych/generation/generate.py's job.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import check_finite, check_float, check_min_ndim, check_sampling

__all__ = ["sampling_probs"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))  # -inf entries give exp(-inf) = 0
    return e / e.sum(axis=-1, keepdims=True)


def sampling_probs(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> np.ndarray:
    """Shapes: logits (..., V) -> probs (..., V), each row summing to 1, in the logits' dtype."""
    check_min_ndim("logits", logits, 1, "(..., V)")
    check_float("logits", logits)
    check_finite("logits", np.isfinite(logits).all())
    check_sampling(temperature, top_k, top_p)
    scores = logits / np.asarray(temperature, dtype=logits.dtype)

    if top_k is not None and top_k < scores.shape[-1]:
        # The k-th largest logit of each row; everything below it goes. np.partition puts it at index
        # V - k without sorting the rest. Ties with the k-th logit all stay, as in HF's warper.
        kth = np.partition(scores, -top_k, axis=-1)[..., -top_k, None]
        scores = np.where(scores < kth, -np.inf, scores)

    if top_p is not None and top_p < 1:
        # Sorted ascending, a token goes when the probability of it and every less likely token is at
        # most 1 - top_p: what remains are the most likely tokens, and they carry at least top_p.
        # (Written from the tail, as HF does, so the two agree to the last rounding; the most likely
        # token always stays.)
        order = np.argsort(scores, axis=-1, kind="stable")
        sorted_probs = _softmax(np.take_along_axis(scores, order, axis=-1))
        drop_sorted = np.cumsum(sorted_probs, axis=-1) <= 1 - top_p
        drop_sorted[..., -1] = False
        drop = np.empty_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)  # back to vocabulary order
        scores = np.where(drop, -np.inf, scores)

    return _softmax(scores)
