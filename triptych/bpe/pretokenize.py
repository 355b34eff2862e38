"""Pre-tokenization: cut text into the pieces inside which BPE merges may happen.

Two cuts, in this order:
1. Special tokens ("<|endoftext|>", "<|im_start|>", ...) are found first and kept whole, so no merge
   and no pre-token ever crosses one. When two specials overlap ("<|a|>" and "<|a|>b"), the longest
   one starting at the leftmost position wins, as in the Hugging Face `tokenizers` library.
2. The text between them is split with GPT-2's regular expression: contractions ('s 't 're 've 'm
   'll 'd), a letter run with at most one leading space, a digit run with at most one leading space,
   a run of other symbols with at most one leading space, and whitespace. `\\s+(?!\\S)` takes a
   whitespace run except its last character when a word follows, so that the space stays attached to
   the word: "a   b" -> 'a', '  ', ' b'. `\\p{L}` and `\\p{N}` need the `regex` package (the
   standard `re` module has no Unicode property classes).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import regex

from triptych.common.checks import InputError

__all__ = ["GPT2_PATTERN", "compile_pattern", "special_splitter", "split_specials", "check_specials",
           "count_pretokens"]

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def compile_pattern(pattern: str) -> regex.Pattern:
    """The pre-tokenizer regex, or InputError naming `pattern` when it does not compile."""
    if not isinstance(pattern, str) or not pattern:
        raise InputError(f"pattern: expected a non-empty regular expression string, got {pattern!r}")
    try:
        return regex.compile(pattern)
    except regex.error as e:
        raise InputError(f"pattern: expected a valid regular expression, got {pattern!r} ({e})") from None


def check_specials(special_tokens) -> list[str]:
    """special_tokens as a list of distinct non-empty strings (None means none)."""
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str | bytes) or not isinstance(special_tokens, Iterable):
        raise InputError(f"special_tokens: expected a list of strings, got {special_tokens!r}")
    specials = list(special_tokens)
    for s in specials:
        if not isinstance(s, str) or not s:
            raise InputError(f"special_tokens: expected non-empty strings, got {s!r}")
    if len(set(specials)) != len(specials):
        dup = next(s for s in specials if specials.count(s) > 1)
        raise InputError(f"special_tokens: expected distinct strings, got {dup!r} twice")
    return specials


def special_splitter(special_tokens: Sequence[str]) -> regex.Pattern | None:
    """A regex matching any special token, longest first, so that at a given position the longest
    special wins (the regex tries alternatives left to right). None when there are no specials."""
    if not special_tokens:
        return None
    ordered = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("|".join(regex.escape(s) for s in ordered))


def split_specials(text: str, splitter: regex.Pattern | None) -> Iterator[tuple[str, bool]]:
    """(segment, is_special) in order; ordinary segments are never empty."""
    if splitter is None:
        if text:
            yield text, False
        return
    start = 0
    for m in splitter.finditer(text):
        if m.start() > start:
            yield text[start:m.start()], False
        yield m.group(), True
        start = m.end()
    if start < len(text):
        yield text[start:], False


def count_pretokens(texts: Iterable[str], pattern: regex.Pattern, splitter: regex.Pattern | None) -> Counter:
    """{pre-token string: how often it occurs}, special tokens left out (they never take part in merges)."""
    counts: Counter = Counter()
    for text in texts:
        for segment, is_special in split_specials(text, splitter):
            if not is_special:
                counts.update(pattern.findall(segment))
    return counts
