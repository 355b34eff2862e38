"""The text half of the `cs336` group: get_tokenizer judged against Hugging Face `tokenizers` built
from the same vocab and merges, run_train_bpe against our trainer under the handout's tie rule, with
their named mistakes. Vocabularies, merges and texts travel to the child packed (flat bytes +
offsets, triptych/crosscheck/sandbox/kinds.py); the graders compare lists, not arrays within a tolerance.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np

from triptych.crosscheck.spec import locate

# Columns of the report that mean nothing for packed ids and bytes (compared as lists, not within a tolerance).
NO_NUMBERS = {"max_abs_err": None, "tolerance": None, "l2": None, "l2_ref": {}, "shape": None, "expected_shape": None}

SPECIAL = "<|endoftext|>"
DOUBLE = SPECIAL + SPECIAL  # overlaps SPECIAL: the longer one must win where both match

# A small corpus in the handout's form (documents separated by <|endoftext|>): repeated words so
# merges have counts to win by, ties among them so the tie rule decides, accents and an emoji so
# multi-byte characters are split and merged.
_DOCS = [
    "The cat sat on the mat. The cat ate the rat; the rat ran at the cat's hat.",
    "Once upon a time there was a tiny robot. The robot liked to read, and it read all day long.",
    "She said: \"I'll be there at 10:30, won't you?\" He said he'd be there at 11.",
    "Café crème, déjà vu, naïve façade: accents are bytes too. 🙂 smiles 🙂 twice.",
    "aaa bbb aaa bbb ab ab ba ba abab baba, zz yy zz yy xx ww xx ww.",
    "Numbers 123 4567 89 and 123 again; 4567 4567.\n\nA new paragraph, then\nanother line.",
]
CORPUS = ("\n" + SPECIAL + "\n").join(_DOCS * 3)

TEXTS = [
    "",
    "s",
    "🙃",
    "Hello, how are you? I'm fine, thanks!",
    "The cat sat on the mat." + SPECIAL + "Once upon a time",
    "Hello, how " + DOUBLE + " are you?" + SPECIAL,
    "Café déjà vu 🙂 — naïve façade 日本語 text\n\nNumbers 123 4567.",
    SPECIAL + "at the start and the end" + SPECIAL,
    # Repeated pairs: a tokenizer that merges the pair most frequent in the text (not the one learned
    # first) gives other tokens here.
    "at at at at the cat",
    "aaaaaaa aaa",
]


# ---------------------------------------------------------------- packing

def pack_bytes(items) -> dict:
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in items], dtype=np.int64)
    flat = np.frombuffer(b"".join(items), dtype=np.uint8).copy()
    return {"flat": flat, "offsets": offsets}


def unpack(flat, offsets) -> list:
    return [flat[offsets[j]:offsets[j + 1]] for j in range(len(offsets) - 1)]


def pack_vocab_merges(vocab: dict, merges: list) -> tuple[dict, dict]:
    ids = sorted(vocab)
    v = {"ids": np.asarray(ids, dtype=np.int64), **pack_bytes([vocab[i] for i in ids])}
    left, right = pack_bytes([a for a, _ in merges]), pack_bytes([b for _, b in merges])
    m = {"left_flat": left["flat"], "left_offsets": left["offsets"],
         "right_flat": right["flat"], "right_offsets": right["offsets"]}
    return v, m


def _ids_out(lists) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(lists) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(x) for x in lists], dtype=np.int64)
    return np.asarray([i for x in lists for i in x], dtype=np.int64), offsets


# ---------------------------------------------------------------- the tokenizer

@lru_cache(maxsize=4)
def trained(vocab_size: int) -> tuple[dict, list]:
    """Our trainer on CORPUS (milliseconds), the double special appended as the handout's tests do."""
    from triptych.bpe.train import train_on_texts
    t = train_on_texts([CORPUS], vocab_size, [SPECIAL])
    vocab = dict(t.vocab)
    vocab[len(vocab)] = DOUBLE.encode("utf-8")
    return vocab, list(t.merges)


def tokenizer_inputs(vocab_size, specials):
    def make(rng, dt):
        vocab, merges = trained(vocab_size)
        v, m = pack_vocab_merges(vocab, merges)
        return {"vocab": v, "merges": m, "special_tokens": specials, "texts": list(TEXTS)}
    return make


def _rebuild(i) -> tuple[dict, list]:
    v, m = i["vocab"], i["merges"]
    toks = [t.tobytes() for t in unpack(np.asarray(v["flat"]), np.asarray(v["offsets"]))]
    vocab = dict(zip((int(x) for x in np.asarray(v["ids"])), toks))
    left = [t.tobytes() for t in unpack(np.asarray(m["left_flat"]), np.asarray(m["left_offsets"]))]
    right = [t.tobytes() for t in unpack(np.asarray(m["right_flat"]), np.asarray(m["right_offsets"]))]
    return vocab, list(zip(left, right))


def hf_tokenizer(vocab: dict, merges: list, specials):
    """Hugging Face `tokenizers`: a byte-level BPE on the same vocab and merges (GPT-2's printable
    stand-ins for bytes), GPT-2's pre-tokenizer regex, special tokens as added tokens."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from triptych.bpe.formats import token_to_text
    specials = list(specials or [])
    # Specials stay in the model's vocab (as in a saved vocab.json), so adding them finds their ids.
    text_vocab = {token_to_text(t): i for i, t in vocab.items()}
    lib = Tokenizer(models.BPE(vocab=text_vocab, merges=[(token_to_text(a), token_to_text(b)) for a, b in merges]))
    lib.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    lib.decoder = decoders.ByteLevel()
    if specials:
        by_bytes = {t: i for i, t in vocab.items()}
        lib.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
        for s in specials:
            if lib.token_to_id(s) != by_bytes[s.encode("utf-8")]:
                raise RuntimeError(f"tokenizers gave special {s!r} id {lib.token_to_id(s)}")
    return lib


def tokenizer_ref(m, i):
    """HF's ids, the texts themselves (decode must give them back), and HF's ids again (what
    encode_iterable must stream)."""
    vocab, merges = _rebuild(i)
    lib = hf_tokenizer(vocab, merges, i["special_tokens"])
    ids = [lib.encode(t, add_special_tokens=False).ids if t else [] for t in i["texts"]]
    texts = pack_bytes([t.encode("utf-8") for t in i["texts"]])
    return (*_ids_out(ids), texts["flat"], texts["offsets"], *_ids_out(ids))


def encode_special_split(i):
    """Special tokens cut by the pre-tokenizer like ordinary text: no special handling at all."""
    from triptych.bpe.tokenizer import Tokenizer
    vocab, merges = _rebuild(i)
    tok = Tokenizer(vocab, merges, None)
    return [tok.encode(t) for t in i["texts"]]


def encode_by_frequency(i, scope: str = "text", tie: str = "rank"):
    """Merges applied the way training learns them: the learned pair that occurs most often first,
    rather than the pair with the lowest rank. Counted over the whole text (scope "text") or within
    each pre-token ("word"); a tie goes to the earlier merge ("rank") or to the pair seen first
    ("leftmost", what Counter.most_common gives)."""
    from triptych.bpe.pretokenize import GPT2_PATTERN, compile_pattern, special_splitter, split_specials
    vocab, merges = _rebuild(i)
    id_of = {t: k for k, t in vocab.items()}
    rank = {pair: r for r, pair in enumerate(merges)}
    pattern, splitter = compile_pattern(GPT2_PATTERN), special_splitter(list(i["special_tokens"] or []))
    out = []
    for text in i["texts"]:
        pieces = []
        for seg, special in split_specials(text, splitter):
            pieces += [[seg.encode("utf-8")]] if special else [[bytes([b]) for b in w.encode("utf-8")]
                                                              for w in pattern.findall(seg)]
        groups = [pieces] if scope == "text" else [[w] for w in pieces]
        for group in groups:
            while True:
                counts = Counter(p for w in group if len(w) > 1 for p in zip(w, w[1:]) if p in rank)
                if not counts:
                    break
                best = (max(counts, key=lambda p: (counts[p], -rank[p])) if tie == "rank"
                        else counts.most_common(1)[0][0])
                group[:] = [_merge(w, best) for w in group]
        out.append([id_of[t] for group in groups for w in group for t in w])
    return out


def _merge(word, pair):
    out, j = [], 0
    while j < len(word):
        if j + 1 < len(word) and (word[j], word[j + 1]) == pair:
            out.append(word[j] + word[j + 1])
            j += 2
        else:
            out.append(word[j])
            j += 1
    return out


TOKENIZER_MISTAKES = (
    ("cs336_tokenizer_special_split", encode_special_split,
     "special tokens cut into pieces like ordinary text",
     "special tokens must be split off BEFORE pre-tokenization, each kept whole as its one id (the "
     "longest wins where two overlap)"),
) + tuple(
    ("cs336_tokenizer_merges_by_frequency", lambda i, s=scope, t=tie: encode_by_frequency(i, s, t),
     f"merges applied by how often a pair occurs in the {where}, not by their rank",
     "encoding applies, in each pre-token, the learned merge with the LOWEST rank (learned earliest) "
     "first, repeatedly; counting pairs is for training only")
    for scope, where in (("text", "text"), ("word", "pre-token")) for tie in ("rank", "leftmost"))


def _first_diff(a, b, vocab: dict) -> str:
    """Where two id lists part, each id shown with its token's bytes."""
    j = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    def show(ids):
        return f"{ids[j]} {vocab.get(int(ids[j]), b'?')!r}" if j < len(ids) else "the end"
    return f"at token {j}: got {show(a)}, expected {show(b)}"


def _grade_tokenizer(case, inputs, got, refs):
    ids, decoded, streamed = unpack(got[0], got[1]), unpack(got[2], got[3]), unpack(got[4], got[5])
    want = unpack(refs["numpy"][0], refs["numpy"][1])
    texts = inputs["texts"]
    if len(ids) != len(texts):
        return dict(verdict="wrong return type", message=f"{len(ids)} encodings for {len(texts)} texts")
    vocab = _rebuild(inputs)[0]
    bad = [j for j in range(len(texts)) if list(ids[j]) != list(want[j])]
    if bad:
        j = bad[0]
        row = dict(verdict="FAIL", max_abs_err=float(len(bad)),
                   message=f"encode({texts[j][:40]!r}) differs from Hugging Face tokenizers "
                           f"{_first_diff(list(ids[j]), list(want[j]), vocab)} ({len(bad)} of {len(texts)} texts differ)")
        for name, fn, says, why in TOKENIZER_MISTAKES:
            try:
                wrong = fn(inputs)
            except Exception:  # noqa: BLE001 - a variant undefined here simply does not match
                continue
            if all(list(ids[k]) == list(wrong[k]) for k in range(len(texts))):
                row.update(mistake=name, diagnosis=f"your ids match {says}", explanation=why,
                           fix_at=locate(("triptych.bpe.tokenizer", "Tokenizer._piece_ids", "r < best_rank")
                                         if "frequency" in name else ("triptych.bpe.tokenizer", "Tokenizer.encode", "split_specials")))
                break
        else:
            spelled = b"".join(vocab.get(int(t), b"?") for t in ids[j])
            if spelled == b"".join(vocab[int(t)] for t in want[j]):
                # Same bytes, other pieces: merges taken in another order (by count, right to left,
                # in a set's order, which can even change from run to run).
                row.update(diagnosis="your ids spell the same bytes but split them differently",
                           explanation="BPE applies the merge of lowest rank first, and each merge to a pair's "
                                       "occurrences from left to right: 'aaaaaaa' with the merge (a, a) is "
                                       "aa aa aa a, never a aa aa aa")
        return row
    for j, text in enumerate(texts):
        back = decoded[j].tobytes().decode("utf-8", "replace")
        if back != text:
            return dict(verdict="FAIL", message=f"decode(encode({text[:40]!r})) gave {back[:40]!r}: the round trip "
                                                f"must give the text back")
    for j, text in enumerate(texts):
        if list(streamed[j]) != list(want[j]):
            return dict(verdict="FAIL", message=f"encode_iterable over the lines of {text[:40]!r} differs from "
                                                f"encode {_first_diff(list(streamed[j]), list(want[j]), vocab)}")
    return dict(ok=True, verdict="pass", max_abs_err=0.0,
                message=f"{len(texts)} texts: ids equal Hugging Face tokenizers', decode and encode_iterable agree")


# ---------------------------------------------------------------- BPE training

def train_inputs(vocab_size):
    def make(rng, dt):
        return {"corpus": CORPUS, "vocab_size": vocab_size, "special_tokens": [SPECIAL]}
    return make


def train_ref(m, i):
    """Our trainer with the handout's tie rule (the lexicographically greater pair of byte strings)."""
    from triptych.bpe.train import train_on_texts
    t = train_on_texts([i["corpus"]], i["vocab_size"], i["special_tokens"], tie_break="bytes")
    v, mm = pack_vocab_merges(t.vocab, t.merges)
    return v["ids"], v["flat"], v["offsets"], mm["left_flat"], mm["left_offsets"], mm["right_flat"], mm["right_offsets"]


def train_smaller_pair(i) -> list:
    """The merges a trainer makes when a tie goes to the lexicographically SMALLER pair: a plain
    recount-every-merge loop, independent of triptych/bpe/train.py's incremental index."""
    from triptych.bpe.pretokenize import count_pretokens, compile_pattern, special_splitter, GPT2_PATTERN
    counts = count_pretokens([i["corpus"]], compile_pattern(GPT2_PATTERN), special_splitter(i["special_tokens"]))
    words = {tuple(bytes([b]) for b in w.encode("utf-8")): c for w, c in counts.items()}
    merges, size = [], 256 + len(i["special_tokens"])
    while size < i["vocab_size"]:
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        top = max(pairs.values())
        best = min(p for p, c in pairs.items() if c == top)
        merges.append(best)
        size += 1
        words = {tuple(_merge(list(w), best)): c for w, c in words.items()}
    return merges


def _grade_train(case, inputs, got, refs):
    ids, toks = got[0], [t.tobytes() for t in unpack(got[1], got[2])]
    merges = list(zip((t.tobytes() for t in unpack(got[3], got[4])), (t.tobytes() for t in unpack(got[5], got[6]))))
    r = refs["numpy"]
    want_toks = [t.tobytes() for t in unpack(r[1], r[2])]
    want_merges = list(zip((t.tobytes() for t in unpack(r[3], r[4])), (t.tobytes() for t in unpack(r[5], r[6]))))
    if merges != want_merges:
        j = next((k for k, (a, b) in enumerate(zip(merges, want_merges)) if a != b), min(len(merges), len(want_merges)))
        row = dict(verdict="FAIL", max_abs_err=float(j),
                   message=f"{len(merges)} merges, expected {len(want_merges)}; merge {j} is "
                           f"{merges[j] if j < len(merges) else 'missing'}, expected "
                           f"{want_merges[j] if j < len(want_merges) else 'none'}")
        try:
            other = train_smaller_pair(inputs)
        except Exception:  # noqa: BLE001
            other = None
        if merges == other:
            row.update(mistake="cs336_bpe_other_tie_rule",
                       diagnosis="your merges match training where a tie goes to the lexicographically SMALLER pair",
                       explanation="among pairs with the top count the handout's rule takes the lexicographically "
                                   "GREATEST pair of byte strings: max(pairs, key=lambda p: (count[p], p))",
                       fix_at=locate(("triptych.bpe.train", "_tie_keys", "_reversed_order")))
        return row
    if sorted(set(toks)) != sorted(set(want_toks)) or len(toks) != len(want_toks):
        missing = sorted(set(want_toks) - set(toks))[:3]
        return dict(verdict="FAIL", message=f"the vocab holds {len(toks)} tokens, expected {len(want_toks)}"
                                            f"{'; missing e.g. ' + repr(missing) if missing else ''}")
    if sorted(int(x) for x in ids) != list(range(len(want_toks))):
        return dict(verdict="FAIL", message=f"vocab ids must be 0 .. {len(want_toks) - 1}, got "
                                            f"{int(ids.min())} .. {int(ids.max())} ({len(ids)} ids)")
    return dict(ok=True, verdict="pass", max_abs_err=0.0,
                message=f"{len(merges)} merges in the same order and the same {len(toks)} vocab entries as "
                        f"our trainer (ties to the lexicographically greater pair)")


def grade_tokenizer(case, inputs, got, refs):
    """_grade_tokenizer's verdict, without the tolerance and L2 columns: these outputs are packed ids and bytes."""
    return {**_grade_tokenizer(case, inputs, got, refs), **NO_NUMBERS}


def grade_train(case, inputs, got, refs):
    """_grade_train's verdict, without the tolerance and L2 columns: these outputs are packed ids and bytes."""
    return {**_grade_train(case, inputs, got, refs), **NO_NUMBERS}
