"""triptych.bpe.train: merges derived by hand, a naive recount-everything trainer, and the `tokenizers` library.

References, none of them our own output:
- tiny corpora whose merges are worked out in the comments below;
- `naive_train`, written here: recount every pair after every merge, take max() with the documented
  tie-break (the lexicographically greater pair of byte strings);
- the Hugging Face `tokenizers` BpeTrainer (Rust), set up here; with tie_break="library" our merges
  equal its merges, and with the default rule they differ only where the top count is tied.
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from triptych.bpe import GPT2_PATTERN, train, train_on_texts
from triptych.common.checks import InputError

EOT = "<|endoftext|>"


def naive_train(texts: list[str], n_merges: int, special: str | None = EOT):
    """The textbook loop, with no index and no heap: counts from scratch every step."""
    words: Counter = Counter()
    for text in texts:
        for part in (text.split(special) if special else [text]):
            for piece in regex.findall(GPT2_PATTERN, part):
                words[tuple(bytes([b]) for b in piece.encode("utf-8"))] += 1
    merges, counts = [], []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, f in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += f
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # most frequent, then the greater (bytes, bytes)
        merges.append(best)
        counts.append(pairs[best])
        merged: Counter = Counter()
        for w, f in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] += f
        words = merged
    return merges, counts, words


def library_train(texts: list[str], vocab_size: int, specials=(EOT,)):
    """The tokenizers library's byte-level BPE: GPT-2 regex, no prefix space, all 256 bytes to start."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from triptych.bpe.formats import text_to_token

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    parts = [p for t in texts for p in (t.split(specials[0]) if specials else [t])]
    tok.train_from_iterator(parts, trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return [(text_to_token(a), text_to_token(b)) for a, b in pairs], tok


def pairs(*specs: str) -> list[tuple[bytes, bytes]]:
    return [tuple(s.encode().split(b"+")) for s in specs]


# ----------------------------------------------------------------------------------- by hand

def test_cs336_example_by_hand(tmp_path):
    # Words split at whitespace: low x5, lower x2, widest x3, newest x6. Pair counts at the start:
    # es 9, st 9, we 8, lo 7, ow 7, ne 6, ew 6, wi 3, id 3, de 3, er 2. es and st tie at 9: the greater
    # pair of byte strings wins, (s, t) > (e, s). Then e+st 9; o+w and l+o tie at 7, (o, w) wins; l+ow 7;
    # then ne, ew and w+est tie at 6 ((w, e) is gone: "lower" is now low e r): w+est, n+e, ne+west; then
    # wi, id, d+est at 3: w+i, wi+d, wid+est; then low+e and e+r at 2: low+e, lowe+r.
    path = tmp_path / "corpus.txt"
    path.write_text("low low low low low lower lower widest widest widest newest newest newest newest newest newest")
    vocab, merges = train(path, 256 + 1 + 12, [EOT], pattern=r"\S+")
    assert merges == pairs("s+t", "e+st", "o+w", "l+ow", "w+est", "n+e", "ne+west", "w+i", "wi+d", "wid+est",
                           "low+e", "lowe+r")
    assert vocab[0] == EOT.encode() and all(vocab[1 + b] == bytes([b]) for b in range(256))
    assert [vocab[i] for i in range(257, 269)] == [a + b for a, b in merges]


def test_gpt2_pattern_keeps_the_space_on_the_word(tmp_path):
    # "the the the" -> pieces "the", " the", " the": t+h 3 and h+e 3 tie, (t, h) > (h, e); th+e 3;
    # then " "+the 2. Nothing else is left to merge, so a larger vocab_size stops there.
    path = tmp_path / "corpus.txt"
    path.write_text("the the the")
    vocab, merges = train(path, 1000, [EOT])
    assert merges == pairs("t+h", "th+e", " +the")
    assert len(vocab) == 1 + 256 + 3


def test_no_merge_crosses_a_special_token(tmp_path):
    # Pieces "ab", "ab", "ba" (the specials are cut out first): a+b 2, then b+a 1. Without the cut, the
    # regex would read "<|", "endoftext", "|>" and merge inside them.
    path = tmp_path / "corpus.txt"
    path.write_text(f"ab{EOT}ab{EOT}ba")
    vocab, merges = train(path, 300, [EOT])
    assert merges == pairs("a+b", "b+a")
    assert list(vocab.values()).count(EOT.encode()) == 1


def test_utf8_bytes_not_characters(tmp_path):
    # "é" is two bytes c3 a9; "éé éé" -> pieces "éé", " éé": (c3, a9) occurs 4 times and is merged first.
    path = tmp_path / "corpus.txt"
    path.write_text("éé éé", encoding="utf-8")
    _, merges = train(path, 258, [])
    assert merges[0] == (b"\xc3", b"\xa9")
    assert merges[1] == (b"\xc3\xa9", b"\xc3\xa9")  # 2 occurrences, beats (" ", c3) at 1


# ----------------------------------------------------------------------------------- naive reference

TEXTS = st.lists(st.text(alphabet="ab c\n'.é日😀1", max_size=40), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(texts=TEXTS, n_merges=st.integers(1, 40))
def test_equals_naive_recount(texts, n_merges):
    texts = [t.replace(EOT, "") for t in texts]
    texts[0] += EOT + "ab ab"
    ref, ref_counts, _ = naive_train(texts, n_merges)
    got = train_on_texts(texts, 256 + 1 + n_merges, [EOT])
    assert got.merges == ref
    assert got.counts == ref_counts


@settings(max_examples=40, deadline=None)
@given(texts=TEXTS, n_merges=st.integers(1, 40))
def test_library_rule_equals_tokenizers(texts, n_merges):
    got = train_on_texts(texts, 256 + 1 + n_merges, [EOT], tie_break="library")
    lib, tok = library_train(texts, 256 + 1 + n_merges)
    assert got.merges == lib
    assert len(got.vocab) == tok.get_vocab_size()


# ----------------------------------------------------------------------------------- Austen, 10k tokens

@pytest.fixture(scope="module")
def austen():
    from triptych.corpora.austen import load_austen_books

    return list(load_austen_books().values())


def test_austen_10k_library_rule_equals_tokenizers(austen):
    ours = train_on_texts(austen, 10_000, [EOT], tie_break="library")
    lib, tok = library_train(austen, 10_000)
    assert len(ours.merges) == len(lib) == 10_000 - 257
    assert ours.merges == lib
    assert tok.get_vocab_size() == len(ours.vocab) == 10_000


def test_austen_default_rule_differs_only_at_ties(austen):
    """Where the default rule first parts from the library, both pairs have the top count: a tie.
    (One novel, to keep the test short; `bench tokenizer` reports the same for all six: merge 248.)"""
    austen = austen[1:2]  # Pride and Prejudice
    ours = train_on_texts(austen, 1_000, [EOT])
    lib, _ = library_train(austen, 1_000)
    i = next(k for k, (a, b) in enumerate(zip(ours.merges, lib)) if a != b)
    assert ours.merges[:i] == lib[:i]
    # The corpus after the i shared merges, recounted from scratch. Applying merges 0..i-1 in order equals
    # merging, inside each word, the earliest-learned pair present until none is (GPT-2's bpe()).
    rank = {m: r for r, m in enumerate(ours.merges[:i])}
    counts: Counter = Counter()
    for piece, f in Counter(p for t in austen for part in t.split(EOT) for p in regex.findall(GPT2_PATTERN, part)).items():
        w = [bytes([b]) for b in piece.encode("utf-8")]
        while len(w) > 1:
            k = min(range(len(w) - 1), key=lambda k: rank.get((w[k], w[k + 1]), len(rank)))
            if (w[k], w[k + 1]) not in rank:
                break
            w[k:k + 2] = [w[k] + w[k + 1]]
        for p in zip(w, w[1:]):
            counts[p] += f
    top = max(counts.values())
    assert counts[ours.merges[i]] == counts[lib[i]] == top == ours.counts[i]
    assert ours.merges[i] > lib[i]  # ours: the greater pair of byte strings
    assert set(ours.merges) != set(lib)


# ----------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, message", [
    ({"vocab_size": 100}, "vocab_size: expected an integer >= 257"),
    ({"vocab_size": 300.0}, "vocab_size"),
    ({"special_tokens": "<|endoftext|>"}, "special_tokens: expected a list of strings"),
    ({"special_tokens": ["", "x"]}, "special_tokens: expected non-empty strings"),
    ({"special_tokens": ["x", "x"]}, "special_tokens: expected distinct strings"),
    ({"pattern": "(unclosed"}, "pattern: expected a valid regular expression"),
    ({"tie_break": "random"}, "tie_break: expected one of bytes, library"),
])
def test_bad_arguments_name_themselves(tmp_path, kwargs, message):
    path = tmp_path / "c.txt"
    path.write_text("some text")
    args = {"vocab_size": 300, "special_tokens": [EOT], **kwargs}
    with pytest.raises(InputError, match=regex.escape(message)):
        train(path, args.pop("vocab_size"), args.pop("special_tokens"), **args)


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="input_path: expected an existing text file"):
        train(tmp_path / "missing.txt", 300, [])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(InputError, match="input_path: expected UTF-8 text"):
        train(bad, 300, [])
