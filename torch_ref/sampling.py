"""Sampling probabilities, torch side: Hugging Face's own logits warpers, in the order generate()
applies them (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, as
GenerationMixin._get_logits_processor builds them for do_sample=True), then a softmax. The referee
for numpy_impl/sampling.py and jax_impl/sampling.py."""
from __future__ import annotations

import torch
from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from triptych.common.checks import check_finite, check_float, check_min_ndim, check_sampling
from torch_ref._checks import all_finite

__all__ = ["sampling_probs"]


def sampling_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """Shapes: logits (..., V) -> probs (..., V), each row summing to 1, in the logits' dtype."""
    check_min_ndim("logits", logits, 1, "(..., V)")
    check_float("logits", logits)
    check_finite("logits", all_finite(logits))
    check_sampling(temperature, top_k, top_p)
    # generate() leaves out the warpers that would change nothing (temperature 1, top_p 1).
    warpers = LogitsProcessorList()
    if temperature != 1:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1:
        warpers.append(TopPLogitsWarper(float(top_p)))
    rows = logits.reshape(-1, logits.shape[-1])  # the warpers take (batch, V) scores
    scores = warpers(None, rows)
    return torch.softmax(scores, dim=-1).reshape(logits.shape)
