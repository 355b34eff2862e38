"""triptych.bpe.Tokenizer on a vocabulary trained here: the `tokenizers` library encodes with the same vocab.json
+ merges.txt to the same ids, decode inverts encode, streaming equals encoding whole, special tokens."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triptych.bpe import Tokenizer, train_on_texts
from triptych.bpe.formats import save_vocab_merges
from triptych.common.checks import InputError

EOT, IM = "<|endoftext|>", "<|im_start|>"
SPECIALS = [EOT, IM, "<|a|>", "<|a|>b"]  # "<|a|>b" overlaps "<|a|>": the longest wins

# Text without surrogates (UTF-8 cannot encode a lone one), every other code point allowed.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
TEXT_WITH_SPECIALS = st.lists(st.one_of(TEXT, st.sampled_from([*SPECIALS, "<|", "|>", "<|a|", " ", "'", "\n"])),
                              max_size=12).map("".join)


@pytest.fixture(scope="module")
def trained():
    from triptych.corpora.austen import load_austen_books

    book = load_austen_books()["Persuasion"][:200_000]
    result = train_on_texts([book, "emoji 😀😀 日本語 日本 \r\n\t"], 1500, SPECIALS)
    return result.vocab, result.merges


@pytest.fixture(scope="module")
def tok(trained):
    return Tokenizer(*trained, special_tokens=SPECIALS)


@pytest.fixture(scope="module")
def library(trained, tmp_path_factory):
    """The tokenizers library's BPE reading our vocab.json + merges.txt, GPT-2 byte-level pre-tokenizer."""
    from tokenizers import AddedToken, Tokenizer as LibTokenizer, decoders, models, pre_tokenizers

    vocab_path, merges_path = save_vocab_merges(*trained, tmp_path_factory.mktemp("bpe"), SPECIALS)
    lib = LibTokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
    lib.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    lib.decoder = decoders.ByteLevel()
    lib.add_special_tokens([AddedToken(s, normalized=False) for s in SPECIALS])
    return lib


@settings(max_examples=200, deadline=None)
@given(text=TEXT_WITH_SPECIALS)
def test_round_trip_and_equal_to_library(text, tok, library):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids == library.encode(text).ids


@settings(max_examples=150, deadline=None)
@given(text=TEXT_WITH_SPECIALS, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_encode_iterable_equals_encode(text, cuts, tok):
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    chunks = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    assert list(tok.encode_iterable(chunks)) == tok.encode(text)


@pytest.mark.parametrize("chunks", [
    ["we'l", "l go"],  # "'l" is "'" + "l" until the next "l" makes it the contraction "'ll"
    ["you'", "re"], ["a  ", " b"], ["a \n", "b"], ["x\r", "\n"], ["12", "34"],
    ["<|endo", "ftext|>"], ["<|a|", ">b"], ["<|a|>", "b"], ["<|a|>", "c"], ["<", "|", "a", "|", ">", "b!"],
])
def test_encode_iterable_at_hard_cuts(chunks):
    # A vocabulary where "'ll", "'re" and " b" are tokens, so a wrong cut changes the ids (holding back
    # only the last pre-token, not two, fails at "we'l" + "l").
    small = train_on_texts(["we'll go, you're a  b \r\n"] * 20, 256 + len(SPECIALS) + 40, SPECIALS)
    tok = Tokenizer(small.vocab, small.merges, SPECIALS)
    assert {b"'ll", b"'re", b" b"} <= set(small.vocab.values())
    assert list(tok.encode_iterable(chunks)) == tok.encode("".join(chunks))


def test_encode_iterable_streams_a_file(tok, tmp_path):
    path = tmp_path / "big.txt"
    path.write_text(("It is a truth universally acknowledged.\r\n" + EOT + "  don't\n\n") * 2000, encoding="utf-8")
    with open(path, encoding="utf-8", newline="") as f:
        streamed = tok.encode_iterable(f)
        first = next(streamed)  # a generator: ids come before the file is read to the end
        assert f.buffer.tell() < path.stat().st_size
        ids = [first, *streamed]
    assert ids == tok.encode(path.read_bytes().decode("utf-8"))


def test_longest_special_wins(tok, library):
    ids = tok.encode("x<|a|>by<|a|>")
    a, ab = tok.encode("<|a|>"), tok.encode("<|a|>b")
    assert len(a) == len(ab) == 1 and a != ab
    assert ids == tok.encode("x") + ab + tok.encode("y") + a
    assert ids == library.encode("x<|a|>by<|a|>").ids


def test_special_tokens_not_in_vocab_get_new_ids(trained):
    vocab, merges = trained
    t = Tokenizer(vocab, merges, special_tokens=[EOT, "<new>"])
    new = t.encode("<new>")
    assert new == [max(vocab) + 1] and t.decode(new) == "<new>"
    plain = Tokenizer(vocab, merges)  # without specials, the same text is ordinary bytes
    assert len(plain.encode(EOT)) > 1 and plain.decode(plain.encode(EOT)) == EOT


def test_decode_replaces_invalid_utf8(tok):
    # "日" is e6 97 a5; its first byte alone, or a lone continuation byte, is not UTF-8.
    byte_id = {t: i for i, t in tok.vocab.items()}
    cut = [byte_id[b"\xe6"], byte_id[b"\x97"]]
    assert tok.decode(cut) == b"\xe6\x97".decode("utf-8", errors="replace") == "\ufffd"
    assert tok.decode([byte_id[b"\xa5"], byte_id[b"a"]]) == "\ufffda"
    assert tok.decode(cut + [byte_id[b"\xa5"]]) == "日"


@pytest.mark.parametrize("call, message", [
    (lambda t: t.encode(b"bytes"), "text: expected a str, got bytes"),
    (lambda t: t.encode("lone \ud800 surrogate"), "text: expected a str that UTF-8 can encode"),
    (lambda t: t.decode([10 ** 9]), "ids: expected token ids in the vocabulary"),
    (lambda t: t.decode(["a"]), "ids: expected token ids in the vocabulary"),
    (lambda t: list(t.encode_iterable(["ok", 3])), "chunks[1]: expected a str, got int"),
])
def test_bad_input_names_the_argument(tok, call, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(tok)


def test_bad_construction(trained):
    vocab, merges = trained
    with pytest.raises(InputError, match="vocab: expected a dict"):
        Tokenizer({0: "a"}, [])
    with pytest.raises(InputError, match=r"merges\[0\]: expected tokens present in vocab"):
        Tokenizer(vocab, [(b"zz", b"qq")])
    with pytest.raises(InputError, match=r"merges\[1\]: expected a pair"):
        Tokenizer(vocab, [merges[0], ("a", "b")])
    with pytest.raises(InputError, match="pattern: expected a valid regular expression"):
        Tokenizer(vocab, merges, pattern="[")
