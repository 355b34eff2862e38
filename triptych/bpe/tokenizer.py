"""Encoding and decoding with a trained byte-level BPE.

    tok = Tokenizer(vocab, merges, special_tokens=["<|endoftext|>"])
    ids = tok.encode("Hello  world<|endoftext|>")      # [.., .., .., id of <|endoftext|>]
    tok.decode(ids)                                     # the same text back

encode(text):
1. Find the special tokens (longest wins) and keep each as its one id.
2. Split the rest with the pre-tokenizer regex (GPT-2's by default).
3. In each piece, start from its UTF-8 bytes and repeatedly merge the adjacent pair whose merge was
   learned EARLIEST (lowest rank), every occurrence of it left to right, until no learned pair is
   left. This is GPT-2's `bpe()` and gives the same tokens as the Hugging Face `tokenizers` BPE.
Pieces repeat a lot in real text ("the" is ~4% of English), so each piece's ids are cached.

decode(ids) joins the tokens' bytes and decodes them as UTF-8; bytes that are not valid UTF-8 (a
cut in the middle of a character) become U+FFFD, never an exception.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from triptych.bpe.pretokenize import GPT2_PATTERN, check_specials, compile_pattern, special_splitter, split_specials
from triptych.bpe.train import merge_word
from triptych.common.checks import InputError

__all__ = ["Tokenizer"]

CACHE_SIZE = 200_000  # pieces remembered; the cache is emptied when full (long streams stay bounded)


class Tokenizer:
    """A byte-level BPE: vocab {id: bytes}, merges [(bytes, bytes)] in rank order, special tokens."""

    def __init__(self, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens=None, *,
                 pattern: str = GPT2_PATTERN):
        if not isinstance(vocab, dict) or not all(isinstance(i, int) and isinstance(t, bytes) for i, t in vocab.items()):
            raise InputError(f"vocab: expected a dict {{int id: bytes}}, got {_brief(vocab)}")
        specials = check_specials(special_tokens)
        self.vocab = dict(vocab)
        self.special_tokens = specials
        self.pattern = pattern
        self._pattern = compile_pattern(pattern)
        self._splitter = special_splitter(specials)

        # Specials not in the vocabulary get the next free ids (the usual convention).
        by_bytes: dict[bytes, int] = {}
        for i in sorted(self.vocab):
            by_bytes.setdefault(self.vocab[i], i)
        self._special_ids = {}
        for s in specials:
            sid = by_bytes.get(s.encode("utf-8"))
            if sid is None:
                sid = max(self.vocab, default=-1) + 1
                self.vocab[sid] = s.encode("utf-8")
            self._special_ids[s] = sid
        special_ids = set(self._special_ids.values())
        self._id_of = {}  # ordinary token bytes -> id (the lowest id if bytes repeat)
        for i in sorted(self.vocab):
            if i not in special_ids:
                self._id_of.setdefault(self.vocab[i], i)
        # A byte without a token is dropped, as the Hugging Face library does when a BPE has no unknown
        # token: SmolLM2 lacks 21 (0xc0, 0xc1, 0xf5-0xff never occur in UTF-8; 0x04, 0x06, 0x13, 0x14,
        # 0x16, 0x1d, 0xf1, 0xf2 never occurred in its training data). Vocabularies trained here have all 256.
        self._byte_ids = [self._id_of.get(bytes([b])) for b in range(256)]
        self.missing_bytes = bytes(b for b in range(256) if self._byte_ids[b] is None)

        if not isinstance(merges, list | tuple):
            raise InputError(f"merges: expected a list of (bytes, bytes) pairs, got {_brief(merges)}")
        self.merges = list(merges)
        self._rank: dict[tuple[int, int], int] = {}  # (left id, right id) -> rank; a repeated pair keeps the last
        self._merged: dict[tuple[int, int], int] = {}  # (left id, right id) -> id of the merged token
        for r, m in enumerate(self.merges):
            if not (isinstance(m, tuple | list) and len(m) == 2 and all(isinstance(x, bytes) for x in m)):
                raise InputError(f"merges[{r}]: expected a pair (bytes, bytes), got {m!r}")
            try:
                pair, new = (self._id_of[m[0]], self._id_of[m[1]]), self._id_of[m[0] + m[1]]
            except KeyError as e:
                raise InputError(f"merges[{r}]: expected tokens present in vocab, got {m!r} ({e.args[0]!r} "
                                 "is not in the vocabulary)") from None
            self._rank[pair] = r
            self._merged[pair] = new
        self._cache: dict[str, list[int]] = {}
        # For encode_iterable: every proper prefix of a special token, and the longest special's length.
        self._special_prefixes = {s[:k] for s in specials for k in range(1, len(s))}
        self._longest_special = max((len(s) for s in specials), default=0)

    # ---------------------------------------------------------------------------------- constructors

    @classmethod
    def from_files(cls, vocab_path, merges_path, special_tokens=None, **kw) -> Tokenizer:
        """GPT-2-style vocab.json + merges.txt."""
        from triptych.bpe.formats import load_vocab_merges

        vocab, merges = load_vocab_merges(vocab_path, merges_path, special_tokens)
        return cls(vocab, merges, special_tokens, **kw)

    @classmethod
    def from_tokenizer_json(cls, path, **kw) -> Tokenizer:
        """A Hugging Face tokenizer.json (byte-level BPE); its added tokens become the special tokens."""
        from triptych.bpe.formats import load_tokenizer_json

        vocab, merges, specials = load_tokenizer_json(path)
        return cls(vocab, merges, specials, **kw)

    @classmethod
    def from_gguf(cls, path, **kw) -> Tokenizer:
        """The tokenizer fields (tokenizer.ggml.*) of a GGUF model file."""
        from triptych.bpe.formats import load_gguf

        vocab, merges, specials = load_gguf(path, any_pre="pattern" in kw)
        return cls(vocab, merges, specials, **kw)

    # ---------------------------------------------------------------------------------- encode

    def _piece_ids(self, piece: str) -> list[int]:
        """BPE inside one pre-token: merge the lowest-rank pair until none is left (cached)."""
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        byte_ids = self._byte_ids
        try:
            ids = [byte_ids[b] for b in piece.encode("utf-8")]
        except UnicodeEncodeError as e:
            raise InputError(f"text: expected a str that UTF-8 can encode, got the lone surrogate "
                             f"{piece[e.start]!r} in {piece!r}") from None
        if self.missing_bytes:
            ids = [i for i in ids if i is not None]
        rank = self._rank
        while len(ids) > 1:
            best, best_rank = None, None
            for pair in zip(ids, ids[1:]):
                r = rank.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            ids = merge_word(ids, best[0], best[1], self._merged[best])
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[piece] = ids
        return ids

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache, piece_ids = self._cache, self._piece_ids
        for piece in self._pattern.findall(text):
            ids = cache.get(piece)
            out.extend(ids if ids is not None else piece_ids(piece))

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise InputError(f"text: expected a str, got {type(text).__name__}")
        out: list[int] = []
        for segment, is_special in split_specials(text, self._splitter):
            if is_special:
                out.append(self._special_ids[segment])
            else:
                self._encode_ordinary(segment, out)
        return out

    def tokens(self, text: str) -> list[bytes]:
        """The tokens of encode(text) as bytes (for display)."""
        return [self.vocab[i] for i in self.encode(text)]

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        """encode("".join(chunks)) one id at a time, holding only a few characters back: a file opened
        in text mode streams line by line in constant memory, and the ids equal encoding it whole
        (for GPT-2's pattern; a custom pattern that looks further ahead needs more held back).

        What is held back is the text whose tokens the next chunk could still change: an unfinished
        special token ("<|endo"), and the last two pre-tokens ("you'" + "r" becomes "you" + "'re" when
        "e" follows; the regex looks at most two characters past a piece, so earlier ones are final)."""
        if isinstance(chunks, str):
            chunks = (chunks,)
        buffer = ""
        for n, chunk in enumerate(chunks):
            if not isinstance(chunk, str):
                raise InputError(f"chunks[{n}]: expected a str, got {type(chunk).__name__}")
            buffer += chunk
            ids, buffer = self._final_ids(buffer)
            yield from ids
        yield from self.encode(buffer)

    def _unfinished_special(self, text: str, lo: int) -> int:
        """The first position >= lo where the rest of `text` could still grow into a special token."""
        for s in range(max(lo, len(text) - self._longest_special + 1), len(text)):
            if text[s:] in self._special_prefixes:
                return s
        return len(text)

    def _final_ids(self, buffer: str) -> tuple[list[int], str]:
        """(ids that no following text can change, the rest of the buffer to keep)."""
        out: list[int] = []
        hold, pos = self._unfinished_special(buffer, 0), 0
        if self._splitter is not None:
            for m in self._splitter.finditer(buffer):
                if m.start() >= hold:
                    break
                self._encode_ordinary(buffer[pos:m.start()], out)  # text that a special ends is final
                out.append(self._special_ids[m.group()])
                pos = m.end()
                if pos > hold:
                    hold = self._unfinished_special(buffer, pos)
        matches = list(self._pattern.finditer(buffer, pos, hold))
        for m in matches[:-2]:
            out.extend(self._piece_ids(m.group()))
        if len(matches) > 2:  # keep from the end of the last final piece (a pattern may skip characters)
            pos = matches[-3].end()
        return out, buffer[pos:]

    # ---------------------------------------------------------------------------------- decode

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        vocab = self.vocab
        try:
            return b"".join(vocab[i] for i in ids)
        except KeyError as e:
            raise InputError(f"ids: expected token ids in the vocabulary (0..{max(vocab)}), got {e.args[0]!r}") from None
        except TypeError:
            raise InputError(f"ids: expected an iterable of integer ids, got {_brief(ids)}") from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the ids; invalid UTF-8 becomes U+FFFD (the replacement character)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"Tokenizer({len(self.vocab)} tokens, {len(self.merges)} merges, {len(self.special_tokens)} special)"


def _brief(x) -> str:
    text = repr(x)
    return f"{type(x).__name__} {text[:60] + '...' if len(text) > 60 else text}"
