from collections.abc import Iterable, Iterator

from .pretokenization import pretokenize, split_on_special


class Tokenizer:
    def __init__(self, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]],
                 special_tokens: list[str] | None = None):
        self.vocab = dict(vocab)
        self.special_tokens = list(special_tokens or [])
        for tok in self.special_tokens:
            b = tok.encode("utf-8")
            if b not in self.vocab.values():
                self.vocab[len(self.vocab)] = b
        self.ids = {b: i for i, b in self.vocab.items()}
        self.ranks = {pair: r for r, pair in enumerate(merges)}
        self.cache: dict[str, list[int]] = {}

    def _encode_word(self, word: str) -> list[int]:
        if word in self.cache:
            return self.cache[word]
        parts = [bytes([b]) for b in word.encode("utf-8")]
        while len(parts) > 1:
            ranked = [(self.ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:]))]
            rank, i = min(ranked)
            if rank == float("inf"):
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids = [self.ids[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        specials = set(self.special_tokens)
        for chunk in split_on_special(text, self.special_tokens, keep=True):
            if chunk in specials:
                out.append(self.ids[chunk.encode("utf-8")])
                continue
            for word in pretokenize(chunk):
                out.extend(self._encode_word(word))
        return out

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        for line in iterable:
            yield from self.encode(line)

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")
