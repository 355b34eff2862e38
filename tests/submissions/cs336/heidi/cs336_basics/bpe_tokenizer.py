from collections import Counter
from collections.abc import Iterable, Iterator

import regex

GPT2_SPLIT = regex.compile(r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class Tokenizer:
    def __init__(self, vocab, merges, special_tokens=None):
        self.vocab = dict(vocab)
        self.token_to_id = {tok: i for i, tok in self.vocab.items()}
        self.merges = set(merges)
        self.special_tokens = sorted(special_tokens or [], key=len, reverse=True)
        for sp in self.special_tokens:
            if sp.encode("utf-8") not in self.token_to_id:
                self.token_to_id[sp.encode("utf-8")] = len(self.vocab)
                self.vocab[len(self.vocab)] = sp.encode("utf-8")
        self._special_re = (regex.compile("(" + "|".join(map(regex.escape, self.special_tokens)) + ")")
                            if self.special_tokens else None)

    def _merge_word(self, word: bytes) -> list[bytes]:
        symbols = [bytes([b]) for b in word]
        while len(symbols) > 1:
            # merge the pair that occurs most often in this word
            counts = Counter(p for p in zip(symbols, symbols[1:]) if p in self.merges)
            if not counts:
                break
            pair = counts.most_common(1)[0][0]
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == pair:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode(self, text: str) -> list[int]:
        pieces = self._special_re.split(text) if self._special_re else [text]
        ids: list[int] = []
        for piece in pieces:
            if not piece:
                continue
            if piece in self.special_tokens:
                ids.append(self.token_to_id[piece.encode("utf-8")])
                continue
            for m in GPT2_SPLIT.finditer(piece):
                ids.extend(self.token_to_id[s] for s in self._merge_word(m.group(0).encode("utf-8")))
        return ids

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        for text in iterable:
            yield from self.encode(text)

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.vocab.get(i, b"\xef\xbf\xbd") for i in ids).decode("utf-8", errors="replace")
