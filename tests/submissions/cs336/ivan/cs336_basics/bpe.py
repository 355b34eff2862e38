import os
from collections import defaultdict

import regex as re

PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _pretokenize(text, special_tokens):
    counts = defaultdict(int)
    chunks = re.split("|".join(re.escape(s) for s in special_tokens), text) if special_tokens else [text]
    for chunk in chunks:
        for m in re.finditer(PAT, chunk):
            counts[tuple(bytes([c]) for c in m.group().encode("utf-8"))] += 1
    return counts


def train_bpe(input_path: str | os.PathLike, vocab_size: int, special_tokens: list[str]):
    with open(input_path, encoding="utf-8") as f:
        words = _pretokenize(f.read(), special_tokens)
    vocab = {i: bytes([i]) for i in range(256)}
    for s in special_tokens:
        vocab[len(vocab)] = s.encode("utf-8")
    merges = []
    while len(vocab) < vocab_size:
        stats = defaultdict(int)
        for word, freq in words.items():
            for a, b in zip(word, word[1:]):
                stats[(a, b)] += freq
        if not stats:
            break
        # highest count first, then the pair that sorts first
        best = sorted(stats.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        new_words = defaultdict(int)
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == best[0] and word[i + 1] == best[1]:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += freq
        words = new_words
    return vocab, merges
