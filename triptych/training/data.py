"""Character-level data: a tokenizer over the corpus' characters and reproducible random batches.

Batches are a pure function of (seed, step): batch k of a run is the same whether the run went
straight through or was interrupted and resumed at step k, so the data position is just the step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triptych.common.checks import InputError

VAL_FRACTION = 0.1  # the last 10% of the text (by position) is validation


@dataclass(frozen=True)
class CharTokenizer:
    """One id per distinct character, in sorted order (ids are stable for a given corpus)."""
    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Shapes: str of length N -> (N,) int64"""
        table = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(table))
        if unknown:
            raise InputError(f"text: expected only characters of the corpus vocabulary, got {''.join(unknown)!r}")
        return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


@dataclass
class CharData:
    tokenizer: CharTokenizer
    train: np.ndarray  # (N_train,) token ids
    val: np.ndarray  # (N_val,)


def load_char_data(limit_chars: int | None = None, text: str | None = None) -> CharData:
    """Jane Austen's novels (corpora.austen; a missing corpus raises DataMissingError saying how to
    fetch it), optionally only the first `limit_chars` characters; the last 10% is validation.
    The vocabulary always comes from the whole corpus so checkpoints from any slice share ids."""
    if text is None:
        from triptych.corpora.austen import load_austen_text
        text = load_austen_text()
    tok = CharTokenizer.from_text(text)
    if limit_chars is not None:
        if limit_chars < 100:
            raise InputError(f"limit_chars: expected at least 100 characters, got {limit_chars}")
        text = text[:limit_chars]
    ids = tok.encode(text)
    n_val = int(len(ids) * VAL_FRACTION)
    return CharData(tok, ids[:-n_val], ids[-n_val:])


def get_batch(data: np.ndarray, batch_size: int, block_size: int, seed: int, step: int):
    """Random windows of the token stream: x = data[i:i+T], y = data[i+1:i+T+1] (next characters).

    Every start i in 0 .. N - block_size - 1 is drawn with the same probability: the last window,
    i = N - block_size - 1, still has its target data[N - 1].

    Shapes: data (N,) -> x, y (batch_size, block_size) int64
    """
    if len(data) < block_size + 1:
        raise InputError(f"data: expected at least block_size + 1 = {block_size + 1} tokens, got {len(data)}")
    rng = np.random.default_rng((seed, step))
    # integers(low, high) excludes high, so high = (last valid start) + 1 = N - block_size.
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    offsets = np.arange(block_size)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x, y
