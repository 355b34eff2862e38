"""The byte-level BPE walkthrough that `lesson tokenizers` prints (triptych/lessons/tokenization.py renders it).

Four steps, each on real text: (1) a string becomes UTF-8 bytes, more bytes than characters once
it leaves ASCII; (2) GPT-2's regex cuts it into pre-tokens, the space staying on the word after it;
(3) training on a chapter merges the most frequent pair of adjacent tokens, again and again (we show
the first merges and their counts, and the `tokenizers` library's trainer on the same text); (4) a
special token is cut out before everything else and encoded as one id, while the same characters
without the special-token rule shatter into pieces.
"""
from __future__ import annotations

import json

from triptych.bpe.formats import text_to_token
from triptych.bpe.pretokenize import GPT2_PATTERN, compile_pattern
from triptych.bpe.tokenizer import Tokenizer
from triptych.bpe.train import train_on_texts

__all__ = ["walkthrough", "library_byte_level_merges"]

EOT = "<|endoftext|>"
BYTES_SAMPLE = "café 😀"
PIECES_SAMPLE = "It's a truth  universally acknowledged,\nthat in 1813 a naïve man"
SPECIAL_SAMPLE = f"Mr. Bennet's wife{EOT}It is a truth"
N_MERGES = 300  # merges trained on the chapter; the first SHOWN are printed
SHOWN = 12


def library_byte_level_merges(texts: list[str], vocab_size: int, specials: list[str]) -> list[tuple[bytes, bytes]]:
    """The `tokenizers` library's byte-level BpeTrainer (GPT-2 regex, all 256 bytes) on the same texts."""
    from tokenizers import Tokenizer as LibTokenizer, models, pre_tokenizers, trainers

    tok = LibTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [(text_to_token(a), text_to_token(b)) for a, b in (m.split(" ") if isinstance(m, str) else m for m in merges)]


def _show(token: bytes) -> str:
    """A token for printing: its text when it is whole UTF-8, else its bytes in hex."""
    try:
        return repr(token.decode("utf-8"))
    except UnicodeDecodeError:
        return token.hex(" ")


def walkthrough(chapter: str) -> dict:
    """Every number the walkthrough prints, trained on `chapter` (Pride and Prejudice, chapter 1)."""
    sample_bytes = BYTES_SAMPLE.encode("utf-8")
    pieces = compile_pattern(GPT2_PATTERN).findall(PIECES_SAMPLE)

    vocab_size = 1 + 256 + N_MERGES
    ours = train_on_texts([chapter], vocab_size, [EOT])
    by_library_rule = train_on_texts([chapter], vocab_size, [EOT], tie_break="library")
    lib = library_byte_level_merges([chapter], vocab_size, [EOT])
    first_diff = next((i for i, (a, b) in enumerate(zip(ours.merges, lib)) if a != b), None)

    tok = Tokenizer(ours.vocab, ours.merges, [EOT])
    plain = Tokenizer(ours.vocab, ours.merges)  # the same vocabulary without the special-token rule
    ids = tok.encode(SPECIAL_SAMPLE)
    return {
        "bytes": {"text": BYTES_SAMPLE, "characters": len(BYTES_SAMPLE), "utf8": list(sample_bytes),
                  "per_character": [[c, c.encode("utf-8").hex(" ")] for c in BYTES_SAMPLE]},
        "pieces": {"text": PIECES_SAMPLE, "pieces": pieces},
        "training": {
            "chars": len(chapter), "pretokens": ours.pretokens, "distinct_pretokens": ours.words,
            "vocab_size": vocab_size,
            "merges": [{"left": _show(a), "right": _show(b), "new": _show(a + b), "count": c,
                        "library": [_show(x) for x in lib[i]] if i < len(lib) else None}
                       for i, ((a, b), c) in enumerate(zip(ours.merges[:SHOWN], ours.counts))],
            "first_difference_from_library": first_diff,
            "library_rule_equal": by_library_rule.merges == lib,
        },
        "special": {"text": SPECIAL_SAMPLE, "ids": ids, "tokens": [_show(tok.vocab[i]) for i in ids],
                    "special_id": tok.encode(EOT)[0],
                    "without_rule": [_show(plain.vocab[i]) for i in plain.encode(SPECIAL_SAMPLE)],
                    "round_trip": tok.decode(ids) == SPECIAL_SAMPLE},
    }
