"""Training a byte-level BPE: learn merges from a corpus.

    vocab, merges = bpe.train("corpus.txt", vocab_size=10_000, special_tokens=["<|endoftext|>"])

The algorithm (Sennrich et al. 2016, on bytes as in GPT-2):
1. Split the text at the special tokens, then pre-tokenize each part with the GPT-2 regex
   (triptych/bpe/pretokenize.py) and count each distinct pre-token ("word"). Merges never cross a word.
2. Every word starts as its UTF-8 bytes, one token per byte. The vocabulary starts as the special
   tokens (ids 0..S-1) and the 256 single bytes (ids S..S+255).
3. Repeat until the vocabulary has vocab_size entries: count every adjacent pair of tokens inside
   words, weighted by the word's frequency ("aaa" holds (a, a) twice); merge the most frequent pair
   into a new token in every word; record the merge.

Ties (several pairs with the top count) need a rule, and the rule changes the result:
- tie_break="bytes" (default): the pair that is lexicographically greatest as a pair of byte strings
  wins, i.e. compare the left tokens' bytes, then the right tokens' (b"ab" > b"a" > b" "). This is
  the rule of Stanford CS336's reference and independent of how ids are numbered.
- tie_break="library": the rule of the Hugging Face `tokenizers` BpeTrainer: the pair with the
  smallest token ids, where the 256 bytes are numbered in the code-point order of their printable
  stand-ins (triptych/bpe/formats.py: bytes_to_unicode, so the space byte, shown as 'Ġ' = U+0120, sorts after
  every printable ASCII byte) and merged tokens in creation order. With it our merges equal the
  library's (tests/test_bpe_train.py).

When a merge rebuilds a token that already exists (a+bc after ab+c), the existing id is reused and
the vocabulary does not grow, as in the library; merges can then outnumber vocab_size - S - 256.

Speed: recounting every pair after every merge costs O(corpus) per merge. Instead we keep the pair
counts and, for each pair, the set of words that contain it. A merge visits only the words holding
the merged pair, subtracts their old pairs, adds their new ones, and fixes the index for those words
alone. The most frequent pair comes from a heap keyed (-count, tie-break key); entries go stale when
a count falls and are refreshed lazily when popped (counts of existing pairs only fall; new pairs
are pushed when they appear).
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from triptych.bpe.pretokenize import GPT2_PATTERN, check_specials, compile_pattern, count_pretokens, special_splitter
from triptych.common.checks import InputError

__all__ = ["Training", "train", "train_on_texts", "train_on_counts", "merge_word", "TIE_BREAKS"]

TIE_BREAKS = ("bytes", "library")
Progress = Callable[[int, int], None]  # (merges done, merges planned)


@dataclass
class Training:
    """What training produced, plus what a lesson or a test wants to look at."""
    vocab: dict[int, bytes]  # id -> token bytes: specials, the 256 bytes, then one per new token
    merges: list[tuple[bytes, bytes]]  # in creation order
    counts: list[int] = field(default_factory=list)  # the merged pair's count, per merge
    pretokens: int = 0  # pre-tokens in the corpus
    words: int = 0  # distinct pre-tokens


def train(input_path, vocab_size: int, special_tokens=None, *, pattern: str = GPT2_PATTERN,
          tie_break: str = "bytes", progress: Progress | None = None
          ) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train on a UTF-8 text file. Returns (vocab, merges); see the module docstring."""
    result = train_on_texts([read_text(input_path)], vocab_size, special_tokens, pattern=pattern,
                            tie_break=tie_break, progress=progress)
    return result.vocab, result.merges


def read_text(input_path) -> str:
    if not isinstance(input_path, str | Path):
        raise InputError(f"input_path: expected a path to a text file, got {input_path!r}")
    path = Path(input_path)
    if not path.is_file():
        raise InputError(f"input_path: expected an existing text file, got {str(path)!r} (not found)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"input_path: expected UTF-8 text, got undecodable bytes in {str(path)!r} ({e.reason} "
                         f"at byte {e.start})") from None


def _check_vocab_size(vocab_size, n_special: int) -> None:
    smallest = 256 + n_special
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < smallest:
        raise InputError(f"vocab_size: expected an integer >= {smallest} (256 bytes + {n_special} special "
                         f"tokens), got {vocab_size!r}")


def train_on_texts(texts: Iterable[str], vocab_size: int, special_tokens=None, *, pattern: str = GPT2_PATTERN,
                   tie_break: str = "bytes", progress: Progress | None = None) -> Training:
    """Train on strings held in memory; each string is pre-tokenized on its own."""
    specials = check_specials(special_tokens)
    _check_vocab_size(vocab_size, len(specials))
    if isinstance(texts, str):
        raise InputError(f"texts: expected a list of strings, got one string of {len(texts)} characters")
    counts = count_pretokens(texts, compile_pattern(pattern), special_splitter(specials))
    return train_on_counts(counts, vocab_size, specials, tie_break=tie_break, progress=progress)


def merge_word(word: list[int], a: int, b: int, new: int) -> list[int]:
    """Replace each occurrence of the pair (a, b), left to right, without overlap: (x x x) -> (xx x)."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _tie_keys(vocab: dict[int, bytes], first_byte: int, tie_break: str) -> list:
    """Per token id, a key such that the SMALLEST (key[a], key[b]) is the pair the rule prefers, so a
    min-heap of (-count, key[a], key[b]) pops the winner first."""
    keys: list = [None] * len(vocab)
    if tie_break == "library":
        from triptych.bpe.formats import bytes_to_unicode

        printable = bytes_to_unicode()
        for rank, b in enumerate(sorted(range(256), key=lambda b: printable[b])):
            keys[first_byte + b] = first_byte + rank
    else:
        for b in range(256):
            keys[first_byte + b] = _reversed_order(bytes([b]))
    return keys


_INVERT = {i: 255 - i for i in range(256)}


def _reversed_order(token: bytes) -> str:
    """A string whose order is the reverse of the bytes' order: each byte x becomes chr(255 - x) and
    a terminator chr(256) (above every such character) makes a prefix sort AFTER its extensions."""
    return token.decode("latin-1").translate(_INVERT) + "\u0100"


def _count_pairs(words: list[list[int]], freqs: list[int]):
    counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (word, f) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            counts[pair] += f
            where[pair].add(w)
    return dict(counts), dict(where)


def _pop_best(heap: list, pair_counts: dict) -> tuple[tuple[int, int], int] | None:
    """The most frequent pair (ties already ordered by the heap key) and its count; None when none is left."""
    while heap:
        neg, ka, kb, a, b = heapq.heappop(heap)
        current = pair_counts.get((a, b), 0)
        if current == -neg:
            return (a, b), current
        if 0 < current < -neg:  # the count fell since this entry was pushed: requeue it where it belongs
            heapq.heappush(heap, (-current, ka, kb, a, b))
    return None


def train_on_counts(pretoken_counts: dict[str, int], vocab_size: int, special_tokens=None, *,
                    tie_break: str = "bytes", progress: Progress | None = None) -> Training:
    """The merge loop on {pre-token: count}. See the module docstring for the rules and the index."""
    specials = check_specials(special_tokens)
    _check_vocab_size(vocab_size, len(specials))
    if tie_break not in TIE_BREAKS:
        raise InputError(f"tie_break: expected one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
    first_byte = len(specials)
    vocab = {i: s.encode("utf-8") for i, s in enumerate(specials)}
    vocab.update({first_byte + b: bytes([b]) for b in range(256)})
    id_of = {vocab[first_byte + b]: first_byte + b for b in range(256)}  # token bytes -> id (specials excluded)
    tie = _tie_keys(vocab, first_byte, tie_break)

    try:
        words = [[first_byte + b for b in piece.encode("utf-8")] for piece in pretoken_counts]
    except UnicodeEncodeError as e:
        raise InputError(f"texts: expected strings that UTF-8 can encode, got a lone surrogate "
                         f"{e.object[e.start]!r}") from None
    freqs = list(pretoken_counts.values())
    pair_counts, where = _count_pairs(words, freqs)
    heap = [(-c, tie[a], tie[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    winning_counts: list[int] = []
    planned = vocab_size - len(vocab)
    while len(vocab) < vocab_size:
        best = _pop_best(heap, pair_counts)
        if best is None:  # every word is a single token: nothing left to merge
            break
        (a, b), count = best
        token = vocab[a] + vocab[b]
        new = id_of.get(token)
        if new is None:
            new = len(vocab)
            vocab[new] = id_of[token] = token
            tie.append(new if tie_break == "library" else _reversed_order(token))
        merges.append((vocab[a], vocab[b]))
        winning_counts.append(count)
        _apply_merge(a, b, new, words, freqs, pair_counts, where, heap, tie)
        if progress is not None and (len(merges) % 100 == 0 or len(vocab) == vocab_size):
            progress(min(len(vocab) - 256 - first_byte, planned), planned)
    return Training(vocab, merges, winning_counts, sum(freqs), len(words))


def _apply_merge(a: int, b: int, new: int, words, freqs, pair_counts, where, heap, tie) -> None:
    """Merge (a, b) -> new in the words that hold it (from the index), updating counts and index there only."""
    delta: Counter = Counter()
    for w in where.pop((a, b)):
        word, f = words[w], freqs[w]
        merged = merge_word(word, a, b, new)
        words[w] = merged
        old_pairs, new_pairs = set(zip(word, word[1:])), set(zip(merged, merged[1:]))
        for pair in zip(word, word[1:]):
            delta[pair] -= f
        for pair in zip(merged, merged[1:]):
            delta[pair] += f
        for pair in old_pairs - new_pairs:
            holders = where.get(pair)
            if holders is not None:  # None only for (a, b) itself, already taken out above
                holders.discard(w)
                if not holders:
                    del where[pair]
        for pair in new_pairs - old_pairs:
            where.setdefault(pair, set()).add(w)
    for pair, d in delta.items():
        if d == 0:
            continue
        count = pair_counts.get(pair, 0) + d
        if count > 0:
            pair_counts[pair] = count
        else:
            pair_counts.pop(pair, None)
        if d > 0:  # a pair that gained occurrences (almost always a new one, holding `new`): queue it
            heapq.heappush(heap, (-count, tie[pair[0]], tie[pair[1]], pair[0], pair[1]))
