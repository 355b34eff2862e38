"""triptych.bpe.Tokenizer with SmolLM2-135M's real tokenizer: ids equal Hugging Face AutoTokenizer's.

The reference is transformers' own conversion of the GGUF's tokenizer fields
(AutoTokenizer.from_pretrained(folder, gguf_file=...)); ours is built three ways: from the
tokenizer.json that conversion saves (converted afresh, and the data folder's cached copy checked
against it), from the GGUF fields directly, and from vocab.json + merges.txt.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from triptych.bpe import Tokenizer
from triptych.bpe.smollm2 import gguf_path, hf_tokenizer, save_tokenizer_json, tokenizer_json

REPO = Path(__file__).resolve().parents[1]

EDGE_CASES = [
    "",
    "Hello world",
    "emoji: 😀 👍🏽 👩‍👩‍👧 🇫🇷 and ❤️",
    "CJK: 日本語のテキスト, 中文，한국어",
    "combining marks: e\u0301 a\u0308\u0323 n\u0303 Zalgo z\u0351\u0357\u0358o",
    "runs of spaces:  a   b    c     ",
    "   leading spaces",
    "newlines\n\n\nand\n \n  \n",
    "windows\r\nline\r\n\r\nendings\r\n",
    "tabs\tand\t\tmore\t \t",
    "digits 0 12 345 6789 3.14159 1,000,000 2024-01-01 ²³ ٣٤٥ Ⅻ",
    "contractions: I'd've, we'll, it's, DON'T, they're, 'tis, you' re",
    "<|endoftext|>",
    "special tokens <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
    "glued<|endoftext|>text<|endoftext|><|endoftext|> and <|im_start|<|im_end|>>",
    "near misses: <|endoftext| <|im_start |> <repo_name> <reponame> <filename>x",
    "control bytes: \x00\x04\x06\x13\x1d\x7f and \u200b\u00a0\u2009\u3000 spaces",
    "punctuation!!! ... ??? --- ((( ))) \"quoted\" ‘curly’ «guillemets» …",
    "code: def f(x):\n    return x**2  # comment\n\tif a != b: pass",
    "mixed: naïve café résumé Ω≈ç√∫ ÅÍÎÏ ﬁ ligature",
]


@pytest.fixture(scope="module")
def hf():
    return hf_tokenizer()


@pytest.fixture(scope="module")
def fresh_json(hf, tmp_path_factory):
    """tokenizer.json converted now from the GGUF (the module's HF tokenizer saved), not the data
    folder's cache: the conversion under test runs every time."""
    path = tmp_path_factory.mktemp("smollm2-tokenizer") / "tokenizer.json"
    save_tokenizer_json(path, hf)
    return path


@pytest.fixture(scope="module")
def ours(fresh_json):
    return Tokenizer.from_tokenizer_json(fresh_json)


def test_cached_tokenizer_json_is_the_fresh_conversion(fresh_json):
    # The data folder's copy (rebuilt first if another GGUF, library or code made it) says the same.
    assert json.loads(tokenizer_json().read_text(encoding="utf-8")) == json.loads(fresh_json.read_text(encoding="utf-8"))


def test_the_reference_is_what_the_docs_say(hf):
    # offline-assets.md: 49,152 tokens, specials <|endoftext|>=0 <|im_start|>=1 <|im_end|>=2, no BOS added.
    assert len(hf) == 49_152
    assert hf.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [0, 1, 2]
    assert hf.encode("a") == hf.encode("a", add_special_tokens=False)


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases_equal_hf(text, hf, ours):
    assert ours.encode(text) == hf.encode(text)
    assert ours.decode(ours.encode(text)) == hf.decode(hf.encode(text))


def test_readme_equals_hf(hf, ours):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text) > 1000
    assert ours.encode(text) == hf.encode(text)


def test_all_six_austen_novels_equal_hf(hf, ours):
    from triptych.corpora.austen import load_austen_books

    books = load_austen_books()
    assert len(books) == 6
    for title, text in books.items():
        ids = ours.encode(text)
        assert ids == hf.encode(text), title
        assert ours.decode(ids) == text, title
    # The same text streamed line by line (constant memory) gives the same ids as encoding it whole.
    text = "<|endoftext|>".join(books.values())
    assert list(ours.encode_iterable(text.splitlines(keepends=True))) == ours.encode(text)


def test_gguf_fields_give_the_same_tokenizer(ours):
    from_gguf = Tokenizer.from_gguf(gguf_path())
    assert from_gguf.vocab == ours.vocab
    assert from_gguf.merges == ours.merges
    assert from_gguf.special_tokens == ours.special_tokens
    assert len(from_gguf.merges) == 48_900


def test_vocab_json_and_merges_txt_round_trip(ours, tmp_path, hf):
    from triptych.bpe.formats import save_vocab_merges

    vocab_path, merges_path = save_vocab_merges(ours.vocab, ours.merges, tmp_path, ours.special_tokens)
    again = Tokenizer.from_files(vocab_path, merges_path, ours.special_tokens)
    assert again.vocab == ours.vocab and again.merges == ours.merges
    text = EDGE_CASES[2] + EDGE_CASES[13]
    assert again.encode(text) == hf.encode(text)


def test_missing_bytes_are_dropped_like_hf(ours, hf):
    # SmolLM2 has no token for 21 of the 256 bytes; HF's BPE without an unknown token drops them.
    assert len(ours.missing_bytes) == 21 and b"\x04" in ours.missing_bytes
    assert ours.encode("a\x04b") == hf.encode("a\x04b") == hf.encode("a") + hf.encode("b")


def test_decode_of_a_cut_character_equals_hf(ours, hf):
    ids = ours.encode("😀日本")
    assert len(ids) > 2
    for k in range(len(ids) + 1):  # every prefix, most of them ending inside a character
        assert ours.decode(ids[:k]) == hf.decode(ids[:k])
