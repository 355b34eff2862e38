"""The byte-level walkthrough of `lesson tokenizers` (triptych/bpe/walkthrough.py), checked by hand and against
the `tokenizers` library."""
from __future__ import annotations

import ast
import json
from collections import Counter

import pytest
import regex

from triptych.bpe.walkthrough import EOT, walkthrough
from triptych.lessons.tokenization import chapter_one


@pytest.fixture(scope="module")
def chapter():
    return chapter_one()[0]


@pytest.fixture(scope="module")
def bl(chapter):
    return walkthrough(chapter)


def test_bytes_and_pieces_by_hand(bl):
    # c a f = 63 61 66; é = U+00E9 = c3 a9 (2 bytes); space 20; 😀 = U+1F600 = f0 9f 98 80 (4 bytes).
    assert bl["bytes"]["utf8"] == [0x63, 0x61, 0x66, 0xC3, 0xA9, 0x20, 0xF0, 0x9F, 0x98, 0x80]
    assert bl["bytes"]["characters"] == 6
    # Two spaces before "universally": the first is a piece of its own, the second stays on the word.
    assert bl["pieces"]["pieces"] == ["It", "'s", " a", " truth", " ", " universally", " acknowledged", ",", "\n",
                                      "that", " in", " 1813", " a", " naïve", " man"]


def test_first_merges_and_counts_against_the_library(bl, chapter):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=bl["training"]["vocab_size"], special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([chapter], trainer)
    lib = [m.split(" ") if isinstance(m, str) else m for m in json.loads(tok.to_str())["model"]["merges"]]
    shown = bl["training"]["merges"]
    # The library writes a space as 'Ġ' (bytes_to_unicode); the lesson shows the bytes' own text.
    assert [m["library"] for m in shown] == [[repr(x.replace("Ġ", " ")) for x in pair] for pair in lib[:len(shown)]]
    assert bl["training"]["library_rule_equal"]
    # The first count, recounted here: pairs (" ", "t") inside GPT-2 pieces of the chapter.
    pieces = Counter(regex.findall(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
                                   chapter))
    assert shown[0]["new"] == repr(" t")
    assert shown[0]["count"] == sum(f * piece.count(" t") for piece, f in pieces.items())
    assert [m["count"] for m in shown] == sorted((m["count"] for m in shown), reverse=True)


def test_special_token_kept_whole(bl):
    sp = bl["special"]
    assert sp["ids"].count(sp["special_id"]) == 1 and sp["tokens"].count(repr(EOT)) == 1
    assert "".join(ast.literal_eval(t) for t in sp["tokens"]) == sp["text"]  # reprs of whole UTF-8 strings
    assert len(sp["without_rule"]) > len(sp["tokens"]) and repr(EOT) not in sp["without_rule"]
    assert sp["round_trip"]


def test_lesson_renders_the_walkthrough(bl):
    # The rest of the lesson runs in tests/test_lessons_tokenizers.py (`lesson tokenizers --json`).
    from rich.console import Console

    from triptych.lessons.tokenization import render_byte_level

    console = Console(record=True, width=1000)  # wide enough that no sentence wraps
    render_byte_level(bl, console)
    out = console.export_text()
    assert "F.6 Byte-level BPE" in out and "'<|endoftext|>' is one id (0)" in out
    assert "our merges equal the library's, all of them" in out
