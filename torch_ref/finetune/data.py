"""Classification tasks for fine-tuning: real text, split into train / validation / test.

A task is three `TextDataset`s (texts, optional second texts for pair tasks, integer labels) plus the
label names. Built-in tasks read the offline corpora (`corpora/`, fetched by `make data`):

    fine-foods    Amazon fine-food reviews, great (1) vs other (0); validation carved from train
    brown-topics  Brown corpus passages (a few consecutive sentences) -> press / fiction / learned / general,
                  split by document so no document appears in two splits (stand-in for AG News)
    austen-pairs  "is B the sentence that follows A?" over Jane Austen's novels, split by book
                  (a two-text task like BoolQ's question + passage; encoded [CLS] A [SEP] B [SEP])

and, for users online or with local copies, Hugging Face datasets by name with their own schemas:
ag_news (text, label), sst2 (idx, sentence, label), boolq (question, answer, passage).

Batching: `make_loader` groups examples of similar length into a batch and pads each batch only to
its own longest example ("dynamic padding"), which on CPU cuts the work about in half compared with
padding everything to max_length.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field

from triptych.common.checks import InputError

__all__ = [
    "TextDataset", "Task", "TASKS", "HF_TASKS", "BROWN_GROUPS", "load_task", "fine_foods_task",
    "brown_topics_task", "austen_pairs_task", "hf_task", "split_sentences", "dataset_summary",
    "LengthGroupedSampler", "make_loader",
]


@dataclass
class TextDataset:
    """texts[i] (and text_pairs[i] for pair tasks) with integer label labels[i] in [0, n_classes)."""

    texts: list[str]
    labels: list[int]
    text_pairs: list[str] | None = None

    def __post_init__(self):
        if len(self.texts) != len(self.labels):
            raise InputError(f"labels: expected {len(self.texts)} labels (one per text), got {len(self.labels)}")
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts):
            raise InputError(f"text_pairs: expected {len(self.texts)} second texts, got {len(self.text_pairs)}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices) -> "TextDataset":
        idx = list(indices)
        pairs = None if self.text_pairs is None else [self.text_pairs[i] for i in idx]
        return TextDataset([self.texts[i] for i in idx], [self.labels[i] for i in idx], pairs)

    def take(self, n: int | None, seed: int = 0) -> "TextDataset":
        """A seeded random subset of n examples (all of them when n is None or >= len)."""
        if n is None or n >= len(self):
            return self
        return self.subset(sorted(random.Random(seed).sample(range(len(self)), n)))


@dataclass
class Task:
    name: str
    label_names: list[str]
    train: TextDataset
    val: TextDataset
    test: TextDataset
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return self.train.text_pairs is not None


def _split_off(ds: TextDataset, fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    """(rest, held_out): a seeded random `fraction` of ds held out for validation."""
    if not 0 < fraction < 1:
        raise InputError(f"val_fraction: expected a number in (0, 1), got {fraction!r}")
    order = list(range(len(ds)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(fraction * len(ds)))
    return ds.subset(sorted(order[n_val:])), ds.subset(sorted(order[:n_val]))


# ---------------------------------------------------------------------------------------------------
# fine-foods


def fine_foods_task(val_fraction: float = 0.1, seed: int = 0, frames=None) -> Task:
    """Reviews -> great (1) / other (0). `frames` = (train_df, test_df) in corpora.finefoods' schema
    (columns text, label, product); None reads the fetched data."""
    if frames is None:
        from triptych.corpora.finefoods import load_fine_foods

        frames = load_fine_foods()
    train_df, test_df = frames
    full = TextDataset(list(train_df["text"]), [int(v) for v in train_df["label"]])
    train, val = _split_off(full, val_fraction, seed)
    test = TextDataset(list(test_df["text"]), [int(v) for v in test_df["label"]])
    return Task("fine-foods", ["other", "great"], train, val, test,
                notes=f"validation = {val_fraction:.0%} of the 4,000 training reviews")


# ---------------------------------------------------------------------------------------------------
# brown-topics

# The 15 Brown genres folded into 4 topics, in the spirit of AG News's 4 classes.
BROWN_GROUPS = {
    "press": ("news", "editorial", "reviews"),
    "fiction": ("fiction", "mystery", "science_fiction", "adventure", "romance", "humor"),
    "learned": ("learned", "government"),
    "general": ("religion", "hobbies", "lore", "belles_lettres"),
}


def brown_topics_task(sentences_per_passage: int = 3, split=(0.8, 0.1, 0.1), seed: int = 0,
                      documents=None) -> Task:
    """Passages of `sentences_per_passage` consecutive sentences labelled by topic group.

    Documents are shuffled within each group and dealt into train/val/test by `split`, so every split
    sees every topic and no document (with its names and subject) is in two splits.
    `documents`: a list of corpora.brown.BrownDocument; None reads the fetched corpus."""
    if documents is None:
        from triptych.corpora.brown import load_brown_documents

        documents = load_brown_documents()
    if sentences_per_passage < 1:
        raise InputError(f"sentences_per_passage: expected a positive integer, got {sentences_per_passage!r}")
    names = list(BROWN_GROUPS)
    group_of = {genre: names.index(g) for g, genres in BROWN_GROUPS.items() for genre in genres}
    rng = random.Random(seed)
    parts = {"train": TextDataset([], []), "val": TextDataset([], []), "test": TextDataset([], [])}
    for g in range(len(names)):
        docs = [d for d in documents if group_of.get(d.genre) == g]
        rng.shuffle(docs)
        n_val = max(1, round(split[1] * len(docs))) if len(docs) >= 3 else 0
        n_test = max(1, round(split[2] * len(docs))) if len(docs) >= 3 else 0
        dealt = {"test": docs[:n_test], "val": docs[n_test:n_test + n_val], "train": docs[n_test + n_val:]}
        for split_name, split_docs in dealt.items():
            for doc in split_docs:
                s = doc.sentences
                for i in range(0, len(s) - sentences_per_passage + 1, sentences_per_passage):
                    parts[split_name].texts.append(" ".join(s[i:i + sentences_per_passage]))
                    parts[split_name].labels.append(g)
    return Task("brown-topics", names, parts["train"], parts["val"], parts["test"],
                notes=f"{sentences_per_passage}-sentence passages, split by document")


# ---------------------------------------------------------------------------------------------------
# austen-pairs

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"']?[A-Z])")


def split_sentences(text: str, min_words: int = 4) -> list[list[str]]:
    """Paragraphs (blank-line separated) -> their sentences, split after . ! ? before a capital.

    Honorifics ("Mr. Darcy") would be cut by the rule, so a piece ending in one is glued to the next."""
    paragraphs = []
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        pieces = _SENTENCE_END.split(flat) if flat else []
        sentences: list[str] = []
        for piece in pieces:
            if sentences and re.search(r"\b(Mr|Mrs|Ms|Dr|St|Col|Capt)\.$", sentences[-1]):
                sentences[-1] += " " + piece
            else:
                sentences.append(piece)
        sentences = [s for s in sentences if len(s.split()) >= min_words]
        if sentences:
            paragraphs.append(sentences)
    return paragraphs


def _pairs_from_book(text: str, rng: random.Random) -> TextDataset:
    """One positive (A, the sentence after A) and one negative (A, a sentence from elsewhere in the
    same book) per adjacent pair, so the classes are balanced and the topic alone cannot tell them apart."""
    paragraphs = split_sentences(text)
    flat = [s for p in paragraphs for s in p]
    ds = TextDataset([], [], [])
    for para in paragraphs:
        for a, b in zip(para, para[1:]):
            ds.texts.append(a), ds.text_pairs.append(b), ds.labels.append(1)
            while True:  # a random sentence that is neither A nor B
                other = flat[rng.randrange(len(flat))]
                if other not in (a, b):
                    break
            ds.texts.append(a), ds.text_pairs.append(other), ds.labels.append(0)
    return ds


def austen_pairs_task(seed: int = 0, books=None) -> Task:
    """Next-sentence pairs; train on four novels, validate on Northanger Abbey, test on Persuasion
    (split by book, so no sentence is in two splits). `books`: title -> text; None reads the corpus."""
    if books is None:
        from triptych.corpora.austen import load_austen_books

        books = load_austen_books()
    titles = list(books)
    if len(titles) < 3:
        raise InputError(f"books: expected at least 3 books (train, validation, test), got {len(titles)}")
    rng = random.Random(seed)
    per_book = [_pairs_from_book(books[t], rng) for t in titles]
    train = TextDataset([], [], [])
    for ds in per_book[:-2]:
        train.texts += ds.texts
        train.text_pairs += ds.text_pairs
        train.labels += ds.labels
    return Task("austen-pairs", ["not next", "next"], train, per_book[-2], per_book[-1],
                notes=f"train: {', '.join(titles[:-2])}; validation: {titles[-2]}; test: {titles[-1]}")


# ---------------------------------------------------------------------------------------------------
# Hugging Face datasets by name


# name -> (hub id, first text column, second text column or None, label column, label names,
#          validation split or None (then carved from train), test split)
HF_TASKS = {
    "ag_news": ("fancyzhx/ag_news", "text", None, "label", ["World", "Sports", "Business", "Sci/Tech"],
                None, "test"),
    # GLUE SST-2's test labels are hidden (-1), so its validation split serves as test here.
    "sst2": ("stanfordnlp/sst2", "sentence", None, "label", ["negative", "positive"], None, "validation"),
    "boolq": ("google/boolq", "question", "passage", "answer", ["no", "yes"], None, "validation"),
}


def hf_task(name: str, data_files: dict[str, str] | None = None, val_fraction: float = 0.1,
            seed: int = 0) -> Task:
    """A Hugging Face dataset by name (ag_news, sst2, boolq) in its hub schema.

    data_files: {"train": path, "validation"/"test": path} of local JSON-lines files in the same
    schema (what `Dataset.to_json` writes); None loads from the hub (or its local cache)."""
    if name not in HF_TASKS:
        raise InputError(f"task: expected one of {', '.join(list(TASKS) + list(HF_TASKS))}, got {name!r}")
    hub_id, col_a, col_b, col_y, label_names, val_split, test_split = HF_TASKS[name]
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is pinned in requirements.txt
        from triptych.common.invocation import module_command  # the interpreter that runs here, named

        raise InputError(f"task {name}: needs the `datasets` package (`{module_command('pip', 'install', 'datasets')}`"
                         f"): {e}")
    datasets.disable_progress_bars()
    try:
        if data_files is not None:
            raw = datasets.load_dataset("json", data_files=data_files)
        else:
            raw = datasets.load_dataset(hub_id)
    except Exception as e:  # offline hub, missing file, bad cache: say how to get it, not a traceback
        from triptych.corpora import DataMissingError

        where = f"local files {data_files}" if data_files else f"the Hugging Face hub ({hub_id})"
        raise DataMissingError(
            f"task {name}: could not load {where}: {type(e).__name__}: {str(e).splitlines()[0][:160]}; "
            f"go online once (unset HF_DATASETS_OFFLINE) to cache it, or pass --data-files train=PATH,test=PATH"
        ) from None

    def convert(split) -> TextDataset:
        missing = [c for c in (col_a, col_b, col_y) if c and c not in split.column_names]
        if missing:
            raise InputError(f"task {name}: expected columns {missing} in the data, got {split.column_names}")
        labels = [int(v) for v in split[col_y]]  # bool answers (boolq) -> 0/1
        if any(not 0 <= v < len(label_names) for v in labels):
            raise InputError(f"task {name}: expected labels in 0..{len(label_names) - 1}, got {sorted(set(labels))}")
        return TextDataset(list(split[col_a]), labels, list(split[col_b]) if col_b else None)

    if "train" not in raw or test_split not in raw and "test" not in raw:
        raise InputError(f"task {name}: expected splits train and {test_split}, got {list(raw)}")
    train = convert(raw["train"])
    test = convert(raw[test_split] if test_split in raw else raw["test"])
    if val_split and val_split in raw:
        val = convert(raw[val_split])
    else:
        train, val = _split_off(train, val_fraction, seed)
    return Task(name, label_names, train, val, test, notes=f"Hugging Face {hub_id}")


TASKS = {"fine-foods": fine_foods_task, "brown-topics": brown_topics_task, "austen-pairs": austen_pairs_task}


def load_task(name: str, seed: int = 0, data_files: dict[str, str] | None = None) -> Task:
    """Any task by name: the offline ones in TASKS or a Hugging Face one in HF_TASKS."""
    if name in TASKS:
        if data_files is not None:
            raise InputError(f"data_files: only for Hugging Face tasks ({', '.join(HF_TASKS)}), got task {name!r}")
        return TASKS[name](seed=seed)
    return hf_task(name, data_files=data_files, seed=seed)


def dataset_summary(task: Task) -> list[dict]:
    """Per split: size, count per class and the majority-class accuracy (always guessing the class
    most common in *train*: the baseline a classifier must beat)."""
    majority = Counter(task.train.labels).most_common(1)[0][0] if len(task.train) else 0
    rows = []
    for split_name, ds in (("train", task.train), ("val", task.val), ("test", task.test)):
        counts = Counter(ds.labels)
        rows.append({
            "split": split_name,
            "size": len(ds),
            "counts": {task.label_names[c]: counts.get(c, 0) for c in range(task.n_classes)},
            "majority_acc": counts.get(majority, 0) / len(ds) if len(ds) else float("nan"),
        })
    return rows


# ---------------------------------------------------------------------------------------------------
# Batching


class LengthGroupedSampler:
    """Yields lists of indices (batches) of examples with similar lengths, in an order fixed by
    (seed, epoch): shuffle, cut into chunks of 50 batches, sort each chunk by length, cut into batches,
    shuffle the batches. The order depends only on (seed, epoch), so a resumed run sees the same batches.

    With shuffle=False (evaluation) examples are simply sorted by length."""

    def __init__(self, lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0):
        self.lengths, self.batch_size, self.shuffle, self.seed = lengths, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n, bs = len(self.lengths), self.batch_size
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: self.lengths[i])
            return [order[i:i + bs] for i in range(0, n, bs)]
        rng = random.Random(self.seed * 100_003 + self.epoch)
        order = list(range(n))
        rng.shuffle(order)
        chunk = 50 * bs
        batches = []
        for c in range(0, n, chunk):
            part = sorted(order[c:c + chunk], key=lambda i: self.lengths[i])
            batches += [part[i:i + bs] for i in range(0, len(part), bs)]
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


def make_loader(ds: TextDataset, tokenizer, batch_size: int, max_length: int, shuffle: bool, seed: int = 0,
                num_processes: int = 1, process_index: int = 0):
    """A torch DataLoader of dicts (input_ids, attention_mask, [token_type_ids], labels, weight), each
    batch padded to its own longest example. Tokenises once up front (the fast tokenizer does 4,000
    reviews in well under a second). With num_processes > 1, this process's slice of each global batch
    of batch_size (torch_ref/finetune/distributed.py); weight is 0.0 on a padding copy, else 1.0."""
    import torch
    from torch.utils.data import DataLoader

    from torch_ref.finetune.distributed import ShardedBatches, WeightedItems

    if len(ds) == 0:
        raise InputError("dataset: expected at least one example, got an empty split")
    enc = tokenizer(ds.texts, ds.text_pairs, truncation=True, max_length=max_length) if ds.text_pairs \
        else tokenizer(ds.texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    items = [{**{k: enc[k][i] for k in keys}, "labels": ds.labels[i]} for i in range(len(ds))]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def collate(batch):
        width = max(len(b["input_ids"]) for b in batch)
        out = {}
        for k in keys:
            fill = pad_id if k == "input_ids" else 0
            out[k] = torch.tensor([b[k] + [fill] * (width - len(b[k])) for b in batch], dtype=torch.long)
        out["labels"] = torch.tensor([b["labels"] for b in batch], dtype=torch.long)
        out["weight"] = torch.tensor([b["weight"] for b in batch], dtype=torch.float32)
        return out

    sampler = LengthGroupedSampler([len(x) for x in enc["input_ids"]], batch_size, shuffle, seed)
    if num_processes > 1:
        sampler = ShardedBatches(sampler, num_processes, process_index)
    return DataLoader(WeightedItems(items), batch_sampler=sampler, collate_fn=collate)
