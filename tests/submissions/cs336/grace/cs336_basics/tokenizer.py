import json
from collections.abc import Iterable, Iterator

import regex as re

PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class BPETokenizer:
    def __init__(self, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens=None):
        self.vocab = vocab
        self.inverse_vocab = {v: k for k, v in vocab.items()}
        self.merge_rank = {m: i for i, m in enumerate(merges)}
        self.special_tokens = special_tokens or []
        for s in self.special_tokens:
            if s.encode() not in self.inverse_vocab:
                new_id = max(self.vocab) + 1
                self.vocab[new_id] = s.encode()
                self.inverse_vocab[s.encode()] = new_id

    @classmethod
    def from_files(cls, vocab_filepath, merges_filepath, special_tokens=None):
        with open(vocab_filepath) as f:
            vocab = {int(k): bytes(v) for k, v in json.load(f).items()}
        with open(merges_filepath, "rb") as f:
            merges = [tuple(line.rstrip(b"\n").split(b" ")) for line in f if line.strip()]
        return cls(vocab, merges, special_tokens)

    def _bpe(self, token: bytes) -> list[bytes]:
        parts = [token[i:i + 1] for i in range(len(token))]
        while True:
            best, best_rank = None, None
            for i in range(len(parts) - 1):
                r = self.merge_rank.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                return parts
            parts = parts[:best] + [parts[best] + parts[best + 1]] + parts[best + 2:]

    def encode(self, text: str) -> list[int]:
        ids = []
        for pre in re.findall(PAT, text):
            if pre in self.special_tokens:
                ids.append(self.inverse_vocab[pre.encode()])
                continue
            ids.extend(self.inverse_vocab[p] for p in self._bpe(pre.encode("utf-8")))
        return ids

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        for chunk in iterable:
            for i in self.encode(chunk):
                yield i

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")
