import os
from collections import Counter, defaultdict

from .pretokenization import pretokenize, split_on_special


def _count_words(text: str, special_tokens: list[str]) -> Counter:
    counts: Counter = Counter()
    for chunk in split_on_special(text, special_tokens):
        for word in pretokenize(chunk):
            counts[tuple(bytes([b]) for b in word.encode("utf-8"))] += 1
    return counts


def train_bpe(input_path: str | os.PathLike, vocab_size: int, special_tokens: list[str]):
    with open(input_path, encoding="utf-8") as f:
        text = f.read()
    words = _count_words(text, special_tokens)

    vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
    for tok in special_tokens:
        vocab[len(vocab)] = tok.encode("utf-8")
    merges: list[tuple[bytes, bytes]] = []

    pair_counts: Counter = Counter()
    where: dict[tuple[bytes, bytes], set] = defaultdict(set)
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            pair_counts[pair] += n
            where[pair].add(word)

    while len(vocab) < vocab_size and pair_counts:
        # most frequent pair; ties go to the lexicographically greater pair
        best = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pair_counts[best] <= 0:
            break
        merges.append(best)
        merged = best[0] + best[1]
        vocab[len(vocab)] = merged
        for word in list(where[best]):
            if word not in words:
                continue
            n = words.pop(word)
            for pair in zip(word, word[1:]):
                pair_counts[pair] -= n
                if pair_counts[pair] <= 0:
                    del pair_counts[pair]
            new_word, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    new_word.append(merged)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            new_word = tuple(new_word)
            words[new_word] = words.get(new_word, 0) + n
            for pair in zip(new_word, new_word[1:]):
                pair_counts[pair] += n
                where[pair].add(new_word)
        where.pop(best, None)
    return vocab, merges
