"""Exercise F: tokenizers, with real text and real tokenizers.

1. Byte-pair encoding trained by hand on chapter 1 of Pride and Prejudice: split the text into words
   (the same regex as the `tokenizers` library's Whitespace pre-tokenizer, \\w+|[^\\w\\s]+), start from
   characters, and repeatedly merge the most frequent adjacent pair (counts weighted by word
   frequency). Tokenizing applies the learned merges in the order they were learned.
2. The `tokenizers` library's BpeTrainer on the same text with the same settings: merges and
   tokenizations compared one by one. Ties (several pairs with the top count) are broken the way the
   library does it: the pair whose token ids are smallest, where ids are given to characters in
   code-point order and to merged tokens in creation order. A naive max() over a dict breaks ties by
   first occurrence instead; the lesson shows where that would diverge.
3. BERT sentence pairs with the MiniLM WordPiece tokenizer: [CLS] A [SEP] B [SEP], token_type_ids
   (0 for A, 1 for B) and attention_mask (0 on padding).
4. Masked-LM labels from transformers' DataCollatorForLanguageModeling (fixed seed), reproduced by our
   own masking code: masked positions keep the original id as label, every other position -100.
5. Tokenizer and model from different checkpoints: ids from one vocabulary are meaningless (or out of
   range) in another.
6. Byte-level BPE, as in GPT-2, Llama 3 and SmolLM2 (triptych/bpe/walkthrough.py, our bpe package): UTF-8
   bytes, GPT-2's pre-tokenizer pieces, the first merges with their counts beside the `tokenizers`
   library's byte-level trainer, and a special token kept whole.
"""
from __future__ import annotations

import json
import re
from collections import Counter

PRETOKENIZE = re.compile(r"\w+|[^\w\s]+")  # the tokenizers library's Whitespace pre-tokenizer
N_MERGES = 30  # merges learned step by step (printed one by one)
SHOWN_CANDIDATES = 3  # pair counts printed beside each merge
OTHER_VOCAB = 2000  # the "other checkpoint": a BPE with 2,000 tokens trained on the whole novel
MLM_PROBABILITY = 0.15
SEED = 0


# ------------------------------------------------------------------------------------ BPE by hand

def word_counts(text: str) -> Counter:
    """Pre-tokenize and count: {word as a tuple of characters: frequency}."""
    return Counter(tuple(w) for w in PRETOKENIZE.findall(text))


def pair_counts(words: dict[tuple[str, ...], int]) -> Counter:
    """How often each adjacent pair occurs, weighted by the word's frequency ('aaa' holds (a, a) twice)."""
    counts: Counter = Counter()
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return counts


def merge_word(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    """Replace every occurrence of `pair` in `word`, left to right, non-overlapping."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe(text: str, n_merges: int, min_frequency: int = 0, tie_break: str = "ids") -> dict:
    """Learn up to n_merges merges. tie_break='ids' matches the tokenizers library (smallest token ids
    among the most frequent pairs); 'first' takes the first such pair met while counting (a naive max).

    Returns the alphabet, the merges, and per step the winning count and the top candidate counts.
    """
    words = dict(word_counts(text))
    alphabet = sorted({c for w in words for c in w})  # ids in code-point order, as the library assigns them
    ids = {tok: i for i, tok in enumerate(alphabet)}
    merges, steps = [], []
    for _ in range(n_merges):
        counts = pair_counts(words)
        if not counts:
            break
        best = max(counts.values())
        if best < max(min_frequency, 1):
            break
        tied = [p for p, c in counts.items() if c == best]
        pair = min(tied, key=lambda p: (ids[p[0]], ids[p[1]])) if tie_break == "ids" else tied[0]
        top = sorted(counts.items(), key=lambda pc: (-pc[1], ids[pc[0][0]], ids[pc[0][1]]))[:SHOWN_CANDIDATES]
        new = pair[0] + pair[1]
        ids.setdefault(new, len(ids))
        merges.append(pair)
        steps.append({"pair": list(pair), "new": new, "count": best, "ties": len(tied),
                      "candidates": [[a, b, c] for (a, b), c in top]})
        words = {merge_word(w, pair): f for w, f in words.items()}
    return {"alphabet": alphabet, "merges": merges, "steps": steps, "vocab_size": len(ids)}


def bpe_tokenize(text: str, merges: list[tuple[str, str]]) -> list[str]:
    """Apply learned merges: in each word, repeatedly merge the adjacent pair learned EARLIEST."""
    rank = {tuple(p): r for r, p in enumerate(merges)}
    tokens = []
    for w in PRETOKENIZE.findall(text):
        word = tuple(w)
        while len(word) > 1:
            ranked = [(rank[p], p) for p in zip(word, word[1:]) if p in rank]
            if not ranked:
                break
            word = merge_word(word, min(ranked)[1])
        tokens.extend(word)
    return tokens


def library_bpe(texts: list[str], vocab_size: int, min_frequency: int = 0):
    """The tokenizers library's BPE trainer with the same pre-tokenizer and no special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[],
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def library_merges(tok) -> list[tuple[str, str]]:
    """Merges from the trained model's JSON ('a b' strings in older versions, [a, b] lists in newer)."""
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]


# ------------------------------------------------------------------------------------ data

def chapter_one() -> tuple[str, str]:
    """Pride and Prejudice, chapter 1, and the whole novel (corpora raises DataMissingError with the fix)."""
    from triptych.corpora.austen import load_austen_books

    book = load_austen_books()["Pride & Prejudice"]
    start = book.index("Chapter 1") + len("Chapter 1")
    return book[start:book.index("Chapter 2")].strip(), book


def sentences(text: str) -> list[str]:
    """Split after . ! ? (and a closing quote), but not after the titles Mr. and Mrs."""
    flat = " ".join(text.split())
    parts = re.split(r'(?:(?<=[.!?])|(?<=[.!?]"))(?<!\bMr\.)(?<!\bMrs\.)\s+', flat)
    return [s.strip() for s in parts if s.strip()]


# ------------------------------------------------------------------------------------ MLM masking

def own_mlm_mask(input_ids: list[int], special_mask: list[int], mask_id: int, vocab_size: int, seed: int,
                 p: float = MLM_PROBABILITY):
    """BERT's masking, written out: choose positions with probability p (never special tokens); of
    those 80% become [MASK], 10% a random token, 10% stay; labels keep the original id where chosen
    and -100 elsewhere. Random draws in the same order as transformers' collator, so a shared seed
    gives the same result."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([input_ids])
    prob = torch.full(ids.shape, p)
    prob.masked_fill_(torch.tensor([special_mask], dtype=torch.bool), 0.0)
    chosen = torch.bernoulli(prob, generator=g).bool()
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = ids.clone()
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=g).bool() & chosen
    inputs[to_mask] = mask_id
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=g).bool() & chosen & ~to_mask  # 0.1 / 0.2
    random_ids = torch.randint(vocab_size, ids.shape, dtype=torch.long, generator=g)
    inputs[to_random] = random_ids[to_random]
    return inputs[0].tolist(), labels[0].tolist()


# ------------------------------------------------------------------------------------ lesson

def compute() -> dict:
    chapter, novel = chapter_one()
    sents = sentences(chapter)
    bpe = bpe_section(chapter, sents[:4])
    bert = minilm_tokenizer()
    pair = pair_section(bert, sents)
    mlm = mlm_section(bert, sents[0])
    mismatch = mismatch_section(bert, novel)

    # 6. Byte-level BPE with our bpe package, on the same chapter.
    from triptych.bpe.walkthrough import walkthrough

    byte_level = walkthrough(chapter)
    return {"byte_level": byte_level, "corpus": corpus_section(chapter), "bpe": bpe, "pair": pair, "mlm": mlm,
            "mismatch": mismatch}


def corpus_section(chapter: str) -> dict:
    return {"title": "Pride & Prejudice, chapter 1", "chars": len(chapter), "words": sum(word_counts(chapter).values()),
            "distinct_words": len(word_counts(chapter))}


def first_difference(a: list, b: list) -> int | None:
    """Index of the first merge where two merge lists part (None when the shorter is a prefix)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def bpe_section(chapter: str, samples: list[str]) -> dict:
    """1-2. BPE by hand vs the library, same text, same number of merges, no min_frequency."""
    mine = train_bpe(chapter, N_MERGES)
    naive = train_bpe(chapter, N_MERGES, tie_break="first")
    lib = library_bpe([chapter], vocab_size=mine["vocab_size"])
    lib_merges = library_merges(lib)
    first_diff = first_difference(mine["merges"], lib_merges)
    naive_diff = first_difference(naive["merges"], mine["merges"])
    tokenizations = [{"text": s, "mine": bpe_tokenize(s, mine["merges"]), "library": lib.encode(s).tokens}
                     for s in samples]
    return {"alphabet": mine["alphabet"], "steps": mine["steps"], "merges": [list(m) for m in mine["merges"]],
            "library_merges": [list(m) for m in lib_merges], "vocab_size": mine["vocab_size"],
            "library_vocab_size": lib.get_vocab_size(), "first_difference": first_diff,
            "merges_equal": [list(m) for m in mine["merges"]] == [list(m) for m in lib_merges],
            "steps_with_ties": sum(s["ties"] > 1 for s in mine["steps"]),
            "naive_first_difference": naive_diff,
            "naive_merge_at_difference": list(naive["merges"][naive_diff]) if naive_diff is not None else None,
            "tokenizations": tokenizations}


def minilm_tokenizer():
    """MiniLM's WordPiece tokenizer (uncased BERT vocabulary)."""
    from transformers import AutoTokenizer

    # Through pretrained.minilm, whose ModelMissingError is one line naming the install that works here.
    from triptych.pretrained.minilm import model_path

    return AutoTokenizer.from_pretrained(model_path())


def pair_section(bert, sents: list[str]) -> dict:
    """3. BERT sentence pairs with MiniLM's WordPiece tokenizer."""
    a, b = sents[0], min((s for s in sents[1:12] if len(s.split()) >= 6), key=len)
    pair = bert(a, b)
    batch = bert([a, "It is a truth."], [b, "He had not."], padding=True)
    pair_rows = [{"token": t, "id": i, "token_type_id": tt, "attention_mask": m} for t, i, tt, m in zip(
        bert.convert_ids_to_tokens(pair["input_ids"]), pair["input_ids"], pair["token_type_ids"],
        pair["attention_mask"])]
    padded = {"tokens": bert.convert_ids_to_tokens(batch["input_ids"][1]),
              "token_type_ids": batch["token_type_ids"][1], "attention_mask": batch["attention_mask"][1]}
    return {"a": a, "b": b, "rows": pair_rows, "padded_second": padded,
            "cls": bert.cls_token_id, "sep": bert.sep_token_id}


def mlm_section(bert, sentence: str) -> dict:
    """4. Masked-LM labels: the library's collator vs our own masking, same seed."""
    from transformers import DataCollatorForLanguageModeling

    enc = bert(sentence)
    collator = DataCollatorForLanguageModeling(bert, mlm=True, mlm_probability=MLM_PROBABILITY, seed=SEED)
    out = collator([{"input_ids": enc["input_ids"]}])
    special = bert.get_special_tokens_mask(enc["input_ids"], already_has_special_tokens=True)
    own_inputs, own_labels = own_mlm_mask(enc["input_ids"], special, bert.mask_token_id, len(bert), SEED)
    mlm_rows = [{"position": i, "token": bert.convert_ids_to_tokens(orig), "input_id": int(inp),
                 "input_token": bert.convert_ids_to_tokens(int(inp)), "label": int(lab)}
                for i, (orig, inp, lab) in enumerate(zip(enc["input_ids"], out["input_ids"][0], out["labels"][0]))]
    return {"sentence": sentence, "seed": SEED, "probability": MLM_PROBABILITY, "rows": mlm_rows,
            "collator_labels": out["labels"][0].tolist(), "collator_inputs": out["input_ids"][0].tolist(),
            "own_labels": own_labels, "own_inputs": own_inputs,
            "agree": own_labels == out["labels"][0].tolist() and own_inputs == out["input_ids"][0].tolist()}


def mismatch_section(bert, novel: str) -> dict:
    """5. Mismatch: a BPE "checkpoint" trained on the whole novel vs MiniLM's WordPiece."""
    import torch

    other = library_bpe([novel], vocab_size=OTHER_VOCAB)
    probe = "Netherfield Park is let at last."
    other_enc = other.encode(probe)
    minilm_ids = bert(probe, add_special_tokens=False)["input_ids"]
    embedding = torch.nn.Embedding(other.get_vocab_size(), 8)
    try:
        embedding(torch.tensor(minilm_ids))
        out_of_range = None
    except IndexError as e:  # the model's embedding table is smaller than the foreign ids
        out_of_range = str(e)
    wordpiece_words = [{"word": w, "minilm": bert.tokenize(w), "austen_bpe": other.encode(w).tokens}
                       for w in ("Netherfield", "Bingley", "acknowledged", "neighbourhood", "Longbourn")]
    return {"probe": probe, "other_vocab": other.get_vocab_size(), "minilm_vocab": len(bert),
            "other_tokens": other_enc.tokens, "other_ids": other_enc.ids,
            "read_by_minilm": bert.convert_ids_to_tokens(other_enc.ids),
            "minilm_tokens": bert.convert_ids_to_tokens(minilm_ids), "minilm_ids": minilm_ids,
            "out_of_range_error": out_of_range, "words": wordpiece_words}


def passed(result: dict) -> bool:
    """Our BPEs equal the library's (word-level, and byte-level under its tie rule), our masking equals
    transformers' collator, and the special token survives the byte-level round trip."""
    bl = result["byte_level"]
    return (result["bpe"]["merges_equal"] and result["mlm"]["agree"] and bl["training"]["library_rule_equal"]
            and bl["special"]["round_trip"])


def to_json(result: dict) -> dict:
    return result


def render(result: dict, console) -> None:
    from triptych.lessons import _tokenization_panels as panels

    panels.print_bpe_steps(result["corpus"], result["bpe"], console)
    panels.print_tokenizations(result["bpe"], console)
    panels.print_pair(result["pair"], console)
    panels.print_mlm(result["mlm"], console)
    panels.print_mismatch(result["mismatch"], console)
    render_byte_level(result["byte_level"], console)


def render_byte_level(bl: dict, console) -> None:
    from rich.text import Text

    from triptych.lessons import _render as R

    b, p, t, sp = bl["bytes"], bl["pieces"], bl["training"], bl["special"]
    rows = [(str(i), f"{m['left']} + {m['right']} -> {m['new']}", str(m["count"]),
             " + ".join(m["library"]) if m["library"] else "-",
             Text("=", style="green") if m["library"] == [m["left"], m["right"]] else Text("differs", style="yellow"))
            for i, m in enumerate(t["merges"], 1)]
    diff = t["first_difference_from_library"]
    console.print(R.panel(
        "F.6 Byte-level BPE (GPT-2, Llama 3, SmolLM2): bytes, pieces, merges, special tokens (bpe/)",
        f"1. bytes: {b['text']!r} is {b['characters']} characters but {len(b['utf8'])} UTF-8 bytes: "
        + "  ".join(f"{c!r}={h}" for c, h in b["per_character"]),
        f"2. GPT-2's pre-tokenizer cuts {p['text']!r} into {len(p['pieces'])} pieces: "
        + " ".join(repr(x) for x in p["pieces"]),
        f"3. training on the chapter ({t['chars']:,} characters, {t['pretokens']:,} pieces, "
        f"{t['distinct_pretokens']:,} distinct), {t['vocab_size']} tokens = 1 special + 256 bytes + merges:",
        R.table(["#", "merge (most frequent pair of adjacent tokens)", "count", "tokenizers library", ""], rows),
        R.note("Merges never cross a piece, so ' the' (space first) is learned, never 'e t'. Ties for the top "
               "count go to the lexicographically greater pair of byte strings; the library takes the pair "
               "with the smallest ids instead (bytes numbered by their printable stand-ins, triptych/bpe/formats.py)"
               + (f", so the two first part at merge {diff + 1}" if diff is not None else "")
               + ". With that rule (tie_break='library') our merges "
               + ("equal the library's, all of them." if t["library_rule_equal"] else "DIFFER from the library's.")),
        f"4. {sp['text']!r} -> {len(sp['ids'])} tokens: " + " ".join(sp["tokens"]),
        f"   {sp['tokens'][sp['ids'].index(sp['special_id'])]} is one id ({sp['special_id']}), found "
        "before pre-tokenizing; without the special-token rule the same text reads: " + " ".join(sp["without_rule"]),
        R.note("decode(encode(text)) gives the text back: " + ("yes." if sp["round_trip"] else "NO.")),
    ))
