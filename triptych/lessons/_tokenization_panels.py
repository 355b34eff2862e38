"""The panels of the tokenizers lesson (triptych/lessons/tokenization.py), one function per section:
each takes the part of compute()'s result it shows and prints it."""
from __future__ import annotations


def print_bpe_steps(c: dict, bpe: dict, console) -> None:
    """F.1: each merge by hand beside the tokenizers library's, with ties and the naive rule."""
    from rich.text import Text

    from triptych.lessons import _render as R

    rows = []
    for i, s in enumerate(bpe["steps"], 1):
        cands = ", ".join(f"{a!r}+{b!r}: {n}" for a, b, n in s["candidates"])
        lib = bpe["library_merges"][i - 1] if i - 1 < len(bpe["library_merges"]) else None
        same = lib == s["pair"]
        rows.append((str(i), f"{s['pair'][0]!r} + {s['pair'][1]!r} -> {s['new']!r}", str(s["count"]),
                     str(s["ties"]) if s["ties"] > 1 else "", cands,
                     f"{lib[0]!r} + {lib[1]!r}" if lib else "-", Text("=", style="green") if same else Text("differs", style="bold red")))
    verdict = ("all merges identical to the library's" if bpe["merges_equal"]
               else f"first difference at merge {bpe['first_difference'] + 1}")
    naive = ("a naive max() (first pair met wins ties) would agree on every merge here"
             if bpe["naive_first_difference"] is None else
             f"a naive max() (first pair met wins ties) would first differ at merge {bpe['naive_first_difference'] + 1}, "
             f"choosing {tuple(bpe['naive_merge_at_difference'])}")
    console.print(R.panel(
        f"F.1 BPE by hand on {c['title']} ({c['chars']:,} characters, {c['words']:,} words, "
        f"{c['distinct_words']:,} distinct)",
        f"start: {len(bpe['alphabet'])} characters {''.join(bpe['alphabet'])!r}",
        R.table(["#", "merge (most frequent pair)", "count", "tied", "top pair counts this step",
                 "tokenizers library", ""], rows),
        R.note(f"{verdict} ({bpe['vocab_size']} tokens each). {bpe['steps_with_ties']} of the "
               f"{len(bpe['steps'])} steps had a tie for the top count: the library takes the pair with the "
               f"smallest token ids (characters numbered in code-point order, new tokens in creation order), "
               f"and so does this code; {naive}."),
    ))


def print_tokenizations(bpe: dict, console) -> None:
    """F.2: sample sentences tokenized with our merges and the library's."""
    from triptych.lessons import _render as R

    rows = []
    for t in bpe["tokenizations"]:
        rows.append((t["text"], " ".join(t["mine"]), "same" if t["mine"] == t["library"] else " ".join(t["library"])))
    console.print(R.panel("F.2 Tokenizing with the learned merges (applied in the order learned)",
                          R.table(["text", "ours", "tokenizers library"], rows, justify=["left"] * 3)))


def print_pair(p: dict, console) -> None:
    """F.3: a BERT sentence pair with token_type_ids and attention_mask, and a padded batch row."""
    from triptych.lessons import _render as R

    rows = [(r["token"], str(r["id"]), str(r["token_type_id"]), str(r["attention_mask"])) for r in p["rows"]]
    pad = p["padded_second"]
    console.print(R.panel(
        "F.3 A BERT sentence pair (MiniLM's WordPiece tokenizer, uncased, 30,522 tokens)",
        f"A = {p['a']!r}", f"B = {p['b']!r}",
        R.table(["token", "id", "token_type_id", "attention_mask"], rows),
        f"a shorter pair padded to the same batch length: {' '.join(pad['tokens'])}",
        f"  token_type_ids {pad['token_type_ids']}", f"  attention_mask {pad['attention_mask']}",
        R.note("[CLS] starts the input (its final vector feeds sentence-level heads), [SEP] ends each segment; "
               "token_type_ids say which segment a token belongs to (0 = A, 1 = B) and select a learned segment "
               "embedding; attention_mask 0 marks padding so no query attends to it."),
    ))


def print_mlm(m: dict, console) -> None:
    """F.4: masked-LM inputs and labels from transformers' collator, and whether our masking agrees."""
    from triptych.lessons import _render as R

    rows = [(str(r["position"]), r["token"], r["input_token"], str(r["label"]) if r["label"] != -100 else "-100",
             "<- predict" if r["label"] != -100 else "") for r in m["rows"]]
    console.print(R.panel(
        f"F.4 Masked-LM labels (DataCollatorForLanguageModeling, p = {m['probability']}, seed {m['seed']})",
        R.table(["pos", "original", "model input", "label", ""], rows),
        R.note(f"Our own masking code gives {'the same inputs and labels' if m['agree'] else 'DIFFERENT results'}. "
               "Chosen positions (never [CLS]/[SEP]) keep the original id as label; 80% of them become [MASK], "
               "10% a random token, 10% stay. Every other label is -100, which cross-entropy ignores: the loss "
               "is computed only where the model must reconstruct a token."),
    ))


def print_mismatch(mm: dict, console) -> None:
    """F.5: one tokenizer's ids read through another model's vocabulary."""
    from triptych.lessons import _render as R

    rows = [(w["word"], " ".join(w["minilm"]), " ".join(w["austen_bpe"])) for w in mm["words"]]
    console.print(R.panel(
        "F.5 Tokenizer and model from different checkpoints",
        f"text {mm['probe']!r}",
        f"Austen BPE ({mm['other_vocab']:,} tokens, trained here on the whole novel): "
        f"{mm['other_tokens']} -> ids {mm['other_ids']}",
        f"the same ids read through MiniLM's vocabulary: {mm['read_by_minilm']}  (meaningless: valid ids, wrong tokens)",
        f"MiniLM's own ids: {mm['minilm_tokens']} -> {mm['minilm_ids']}",
        f"MiniLM's ids fed to a model whose embedding table has {mm['other_vocab']:,} rows: "
        f"{'IndexError: ' + mm['out_of_range_error'] if mm['out_of_range_error'] else 'no error'}",
        R.table(["word", "MiniLM WordPiece", "Austen BPE"], rows, justify=["left"] * 3,
                title="when a new tokenizer pays off: domain words"),
        R.note("Ids are only row numbers in one model's embedding table. Another tokenizer's ids either fall "
               "outside the table (a crash, the lucky case) or land on unrelated rows (silent garbage). Train a "
               "new tokenizer when the text's words shatter into many pieces (a new domain or language), and "
               "then the model's embeddings must be trained for it too."),
    ))
