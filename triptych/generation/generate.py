"""Text generation with a decoding engine (triptych/generation/engines.py): the prompt once, then a token at a time.

    engine.prefill(prompt)            -> logits for the first new token
    repeat:  token = pick(logits)        greedy: the argmax; sampling: a draw from sampling_probs
             stop at an end-of-sequence token or after max_new_tokens
             engine.step(token)       -> logits for the next one

N new tokens cost one prefill and N - 1 steps (the last token is never fed back), so the decode rate
is (N - 1) / (time spent in steps), the figure Hugging Face's generate and llama.cpp report too.

The probabilities come from the engine's own backend (numpy_impl, jax_impl or torch_ref
sampling_probs); the draw is one NumPy uniform per token and the inverse of the cumulative
distribution, so a seed gives the same tokens in every backend as long as their probabilities agree
to well within the gap between a uniform and the nearest cumulative boundary.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from triptych.common.checks import InputError, check_positive_int, check_sampling

__all__ = ["Sampling", "Generated", "TextStream", "draw", "probs_function", "generate"]


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy decoding (the argmax; top_k and top_p then mean nothing and are refused);
    above 0, a seeded draw from sampling_probs(logits, temperature, top_k, top_p)."""
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    def __post_init__(self):
        if self.temperature == 0 and not isinstance(self.temperature, bool):
            for name in ("top_k", "top_p"):
                if getattr(self, name) is not None:
                    raise InputError(f"{name}: expected temperature > 0 (sampling) to go with it, got temperature 0 "
                                     "(greedy decoding takes the argmax)")
        else:
            check_sampling(self.temperature, self.top_k, self.top_p)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise InputError(f"seed: expected a non-negative integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def draw(probs: np.ndarray, u: float) -> int:
    """The token whose slice of [0, 1) holds u: the first index where the cumulative probability
    exceeds u (times the total, so rows that sum to 1 - 1e-7 in float32 work too). A token of
    probability 0 has an empty slice and is never drawn.

    Shapes: probs (V,), u a float in [0, 1) -> an index in [0, V)
    """
    cdf = np.cumsum(probs, dtype=np.float64)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), probs.shape[0] - 1))


def probs_function(backend: str):
    """sampling_probs of the backend that runs the engine, as NumPy in and NumPy out."""
    if backend == "jax":
        from jax_impl.sampling import sampling_probs

        return lambda logits, *a: np.asarray(sampling_probs(logits, *a))
    if backend.startswith("torch"):
        import torch

        from torch_ref.sampling import sampling_probs

        return lambda logits, *a: sampling_probs(torch.from_numpy(logits), *a).numpy()
    from numpy_impl.sampling import sampling_probs

    return sampling_probs


@dataclass
class Generated:
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # the new tokens, end-of-sequence included when it came
    stop: str = "max_new_tokens"  # "eos", "max_new_tokens" or "interrupted" (Ctrl-C)
    prefill_s: float = 0.0
    decode_s: float = 0.0  # time in engine.step, over len(ids) - 1 steps
    steps: int = 0

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt_ids) / self.prefill_s if self.prefill_s > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        return self.steps / self.decode_s if self.decode_s > 0 else float("nan")


def generate(engine, prompt_ids, max_new_tokens: int, sampling: Sampling = Sampling(), eos_ids=(),
             on_token=None) -> Generated:
    """Up to max_new_tokens after prompt_ids, stopping after any of eos_ids. on_token(id) is called as
    each token is chosen (streaming). Ctrl-C stops the loop and returns what was made (stop
    "interrupted") instead of losing it.

    Shapes: prompt_ids a list of T >= 1 ints -> Generated with ids of length <= max_new_tokens
    """
    check_positive_int("max_new_tokens", max_new_tokens)
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise InputError("prompt_ids: expected at least one token, got an empty prompt")
    out = Generated(prompt)
    probs = None if sampling.greedy else probs_function(engine.name)
    rng = np.random.default_rng(sampling.seed)
    eos = {int(e) for e in eos_ids}
    try:
        t0 = time.perf_counter()
        logits = engine.prefill(np.array([prompt], dtype=np.int64))
        out.prefill_s = time.perf_counter() - t0
        while True:
            if probs is None:
                token = int(np.argmax(logits))  # the first of equal maxima, as torch.argmax
            else:
                token = draw(probs(logits, sampling.temperature, sampling.top_k, sampling.top_p), rng.random())
            out.ids.append(token)
            if on_token is not None:
                on_token(token)
            if token in eos:
                out.stop = "eos"
                break
            if len(out.ids) == max_new_tokens:
                break
            t0 = time.perf_counter()
            logits = engine.step(token)
            out.decode_s += time.perf_counter() - t0
            out.steps += 1
    except KeyboardInterrupt:
        out.stop = "interrupted"
    return out


class TextStream:
    """Turns tokens into text as they come, without printing half a character: a byte-level BPE token
    can end inside a UTF-8 sequence (an emoji is often two or three tokens), which decodes to the
    replacement character U+FFFD until the rest arrives. push() returns the new complete text;
    flush() whatever is left at the end. decode(ids) -> str is the tokenizer's."""

    def __init__(self, decode):
        self.decode, self.ids, self.shown = decode, [], ""

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        text = self.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return ""  # an unfinished character: wait for the next token
        new, self.shown = text[len(self.shown):], text
        return new

    def flush(self) -> str:
        text = self.decode(self.ids)
        new = text[len(self.shown):] if text.startswith(self.shown) else ""
        self.shown = text
        return new
