"""torch_ref.finetune: data, the four methods, the training loop, checkpoints, studies.

Models here are tiny randomly initialised BERT / DistilBERT / RoBERTa configs saved with
save_pretrained (plus a WordPiece tokenizer trained on a few sentences), so every architecture's code
path runs in seconds. References are independent: hand computations, the HF model's own input_ids
path, formulas from the architecture, analytic schedules.
"""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch

from triptych.common.checks import InputError
from torch_ref.finetune.config import TrainConfig
from torch_ref.finetune.data import (
    BROWN_GROUPS, LengthGroupedSampler, TextDataset, Task, austen_pairs_task, brown_topics_task, dataset_summary,
    fine_foods_task, hf_task, make_loader, split_sentences,
)
from torch_ref.finetune.models import (
    LORA_TARGETS, ModelSpec, build_classifier, count_trainable, expected_trainable, masked_mean,
)
from torch_ref.finetune.train import load_checkpoint, predict, train, warmup_linear

GOOD = ["good", "great", "lovely", "tasty", "fresh"]
BAD = ["bad", "awful", "stale", "bland", "rotten"]
FILLER = ["the", "coffee", "tea", "snack", "box", "was", "very", "really", "and", "price", "bag", "cookies"]


def sentiment_texts(n: int, seed: int) -> TextDataset:
    """Reviews whose label is given by which word list they draw from: learnable in a few epochs."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
        words.insert(rng.randrange(len(words) + 1), rng.choice(GOOD if y else BAD))
        texts.append(" ".join(words))
        labels.append(y)
    return TextDataset(texts, labels)


def sentiment_task(n_train=48, n_val=16, n_test=16) -> Task:
    return Task("toy-sentiment", ["other", "great"], sentiment_texts(n_train, 1), sentiment_texts(n_val, 2),
                sentiment_texts(n_test, 3))


def make_tiny_model(folder, kind: str) -> str:
    """save_pretrained of a 2-layer random `kind` (bert, distilbert, roberta) with a WordPiece tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertTokenizerFast, DistilBertConfig, RobertaConfig

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    corpus = [" ".join(GOOD + BAD + FILLER), "a b c d e f g h i j k l m n o p q r s t u v w x y z .",
              "palaeontologists united nations basketball warehouse ceasefire dinosaur"]
    # 400 keeps every toy word whole: at 120 WordPiece split them into pieces, the max_length=16
    # truncation could cut off the one word that carries the label, and training stalled at chance.
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=400, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]")
    V = tok.get_vocab_size()
    if kind == "bert":
        config = BertConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=24, max_position_embeddings=96, pad_token_id=0)
    elif kind == "distilbert":
        config = DistilBertConfig(vocab_size=V, dim=16, n_layers=2, n_heads=2, hidden_dim=24,
                                  max_position_embeddings=96, pad_token_id=0)
    else:
        config = RobertaConfig(vocab_size=V, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=24, max_position_embeddings=98, type_vocab_size=1,
                               pad_token_id=0, bos_token_id=2, eos_token_id=3)
    from transformers import AutoModel

    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {kind: make_tiny_model(root / kind, kind) for kind in ("bert", "distilbert", "roberta")}


# ---------------------------------------------------------------------------------------------------
# pooling, prefix, parameter counts


def test_masked_mean_matches_hand_computation():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    expected = np.zeros((3, 4))
    for b in range(3):
        rows = [h[b, t] for t in range(5) if mask[b, t]]
        expected[b] = sum(rows) / len(rows) if rows else 0.0  # an all-padding row pools to zeros
    got = masked_mean(torch.tensor(h), torch.tensor(mask)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_prefix_equals_encoder_on_prefix_tokens(tiny, kind):
    """With the prefix set to the word embeddings of tokens p_1..p_L, the prefix model must give what
    the plain encoder gives on input_ids [p; x] with mask [1...1; m], pooled over the text positions."""
    L = 3
    model = build_classifier(ModelSpec(tiny[kind], "prefix", 2, prefix_length=L), tiny[kind]).eval()
    prefix_ids = torch.tensor([7, 11, 13])
    with torch.no_grad():
        model.prefix.copy_(model.inner.get_input_embeddings().weight[prefix_ids])
    x = torch.tensor([[2, 20, 21, 22, 3], [2, 30, 3, 0, 0]])
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    embeds, ext_mask, _ = model.extend_with_prefix(x, m)
    assert embeds.shape == (2, L + 5, 16)
    assert torch.equal(ext_mask, torch.cat([torch.ones(2, L, dtype=m.dtype), m], 1))
    with torch.no_grad():
        got = model(x, m)
        full_ids = torch.cat([prefix_ids.expand(2, L), x], 1)
        hidden = model.inner(input_ids=full_ids, attention_mask=ext_mask).last_hidden_state
        pooled = (hidden[:, L:] * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True)
        ref = pooled @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_head_logits(tiny):
    """Masked mean pooling: what sits in the padded positions must not matter."""
    model = build_classifier(ModelSpec(tiny["bert"], "head", 3), tiny["bert"]).eval()
    m = torch.tensor([[1, 1, 1, 0, 0]])
    a = model(torch.tensor([[2, 20, 3, 0, 0]]), m)
    b = model(torch.tensor([[2, 20, 3, 40, 41]]), m)
    short = model(torch.tensor([[2, 20, 3]]), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, short, rtol=1e-5, atol=1e-6)


def _hand_count(kind: str, method: str, n: int, L: int = 0, r: int = 0) -> int:
    """The same counts written out for the tiny configs (d=16, 2 layers, FFN 24, vocab V, P positions)."""
    d, N = 16, 2  # the FFN width (24) is frozen in every method counted here, so it never appears
    head = {"bert": d * n + n, "distilbert": d * d + d + d * n + n, "roberta": d * d + d + d * n + n}[kind]
    if method == "head":
        return d * n + n
    if method == "prefix":
        return L * d + d * n + n
    if method == "lora":
        return N * 2 * (r * d + d * r) + head
    return None


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
@pytest.mark.parametrize("method", ["full", "head", "prefix", "lora"])
def test_trainable_parameters_match_formula(tiny, kind, method):
    spec = ModelSpec(tiny[kind], method, 3, prefix_length=5, lora_r=4)
    model = build_classifier(spec, tiny[kind])
    formula = expected_trainable(spec, model.config)
    assert count_trainable(model) == formula
    hand = _hand_count(kind, method, 3, L=5, r=4)
    if hand is not None:
        assert formula == hand
    else:  # full: every parameter of the HF classification model trains
        assert formula == sum(p.numel() for p in model.parameters())
    if method == "lora":
        targets, _ = LORA_TARGETS[kind]
        adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A" in n}
        assert adapted == set(targets)


def test_minilm_counts_match_formula():
    """The real default encoder (BERT, d=384, 6 layers): full and LoRA counts vs the formula."""
    for method in ("full", "lora"):
        spec = ModelSpec("minilm", method, 2, lora_r=8)
        model = build_classifier(spec)
        assert count_trainable(model) == expected_trainable(spec, model.config)
    assert expected_trainable(ModelSpec("minilm", "lora", 2, lora_r=8), model.config) == 6 * 2 * 2 * 8 * 384 + 384 * 2 + 2


def test_unknown_model_and_method_raise_input_error(tiny):
    with pytest.raises(InputError, match="model"):
        build_classifier(ModelSpec("no-such-org/no-such-model", "full", 2))
    with pytest.raises(InputError, match="method"):
        build_classifier(ModelSpec(tiny["bert"], "adapter", 2), tiny["bert"])


# ---------------------------------------------------------------------------------------------------
# datasets


def test_fine_foods_split_carves_validation_from_train():
    train_df = pd.DataFrame({"text": [f"review {i}" for i in range(50)], "label": [i % 3 == 0 for i in range(50)],
                             "product": ["p"] * 50}).astype({"label": "int64"})
    test_df = train_df.iloc[:10].assign(text=[f"test {i}" for i in range(10)])
    task = fine_foods_task(val_fraction=0.2, seed=1, frames=(train_df, test_df))
    assert (len(task.train), len(task.val), len(task.test)) == (40, 10, 10)
    assert not set(task.train.texts) & set(task.val.texts)
    assert sorted(task.train.texts + task.val.texts) == sorted(train_df["text"])
    labels = dict(zip(train_df["text"], train_df["label"]))
    assert all(labels[t] == y for t, y in zip(task.val.texts, task.val.labels))
    summary = dataset_summary(task)
    majority = 1 if 2 * sum(task.train.labels) > len(task.train) else 0  # the most common label in train
    assert summary[2]["majority_acc"] == sum(y == majority for y in task.test.labels) / len(task.test)
    assert summary[0]["counts"] == {"other": task.train.labels.count(0), "great": task.train.labels.count(1)}


def test_brown_topics_split_by_document():
    from triptych.corpora.brown import GENRES, BrownDocument

    docs = []
    for g in GENRES:
        for k in range(4):
            fid = f"{g}{k}"
            docs.append(BrownDocument(fid, g, [f"{fid} sentence {i} ." for i in range(7)]))
    task = brown_topics_task(sentences_per_passage=3, documents=docs, seed=0)
    owner = {}
    for split, ds in (("train", task.train), ("val", task.val), ("test", task.test)):
        for text, y in zip(ds.texts, ds.labels):
            fid = text.split()[0]
            assert owner.setdefault(fid, split) == split  # each document in one split only
            genre = fid[:-1]
            assert genre in BROWN_GROUPS[task.label_names[y]]
            assert len(text.split(" sentence ")) == 4  # 3 sentences per passage
    assert len(owner) == len(docs)
    assert {y for y in task.test.labels} == set(range(4))


def test_split_sentences_keeps_honorifics():
    text = "Mr. Darcy bowed to them all. She smiled and said nothing!\nThen she left the room quickly.\n\nNew paragraph starts here now."
    assert split_sentences(text) == [
        ["Mr. Darcy bowed to them all.", "She smiled and said nothing!", "Then she left the room quickly."],
        ["New paragraph starts here now."],
    ]


def test_austen_pairs_positives_follow_negatives_do_not():
    books = {f"Book {b}": "\n\n".join(" ".join(f"Book {b} para {p} sentence number {i} here." for i in range(4))
                                       for p in range(5)) for b in range(4)}
    task = austen_pairs_task(seed=0, books=books)
    assert task.is_pair and task.label_names == ["not next", "next"]
    for ds in (task.train, task.val, task.test):
        assert sum(ds.labels) * 2 == len(ds)  # balanced
        for a, b, y in zip(ds.texts, ds.text_pairs, ds.labels):
            ia, ib = int(a.split()[6]), int(b.split()[6])
            same_para = a.split()[3] == b.split()[3]
            assert (y == 1) == (same_para and ib == ia + 1)
    assert all(t.startswith("Book 2") for t in task.val.texts) and all(t.startswith("Book 3") for t in task.test.texts)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_hf_tasks_load_local_files_in_hub_schema(tmp_path):
    ag = [{"text": f"story {i}", "label": i % 4} for i in range(20)]
    task = hf_task("ag_news", {"train": _write_jsonl(tmp_path / "ag_train.jsonl", ag),
                               "test": _write_jsonl(tmp_path / "ag_test.jsonl", ag[:8])}, val_fraction=0.25)
    assert task.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert (len(task.train), len(task.val), len(task.test)) == (15, 5, 8)
    assert sorted(task.train.texts + task.val.texts) == sorted(r["text"] for r in ag)
    sst = [{"idx": i, "sentence": f"line {i}", "label": i % 2} for i in range(10)]
    task = hf_task("sst2", {"train": _write_jsonl(tmp_path / "s_tr.jsonl", sst),
                            "validation": _write_jsonl(tmp_path / "s_va.jsonl", sst[:4])})
    assert task.test.texts == [r["sentence"] for r in sst[:4]] and task.test.labels == [0, 1, 0, 1]
    bq = [{"question": f"is it {i}", "answer": bool(i % 3), "passage": f"passage {i}"} for i in range(12)]
    task = hf_task("boolq", {"train": _write_jsonl(tmp_path / "b_tr.jsonl", bq),
                             "validation": _write_jsonl(tmp_path / "b_va.jsonl", bq[:6])})
    assert task.is_pair and task.test.text_pairs == [r["passage"] for r in bq[:6]]
    assert task.test.labels == [int(r["answer"]) for r in bq[:6]]


def test_hf_task_missing_data_and_wrong_schema(tmp_path):
    from triptych.corpora import DataMissingError

    with pytest.raises(DataMissingError, match="--data-files"):
        hf_task("sst2", {"train": str(tmp_path / "absent.jsonl"), "validation": str(tmp_path / "absent.jsonl")})
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"review": "x", "label": 0}])
    with pytest.raises(InputError, match="columns"):
        hf_task("ag_news", {"train": bad, "test": bad})


def test_loader_pads_each_batch_to_its_longest(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["bert"])
    ds = sentiment_texts(37, 0)
    loader = make_loader(ds, tok, batch_size=8, max_length=12, shuffle=True, seed=3)
    seen = []
    for batch in loader:
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())  # no wasted columns
        assert bool((batch["input_ids"][batch["attention_mask"] == 0] == tok.pad_token_id).all())
        seen += batch["labels"].tolist()
    assert sorted(seen) == sorted(ds.labels)
    sampler = LengthGroupedSampler([len(t) for t in ds.texts], 8, shuffle=True, seed=3)
    sampler.set_epoch(2)
    first = list(sampler)
    sampler.set_epoch(1)
    sampler.set_epoch(2)
    assert list(sampler) == first  # the order depends on (seed, epoch) only
    assert sorted(i for b in first for i in b) == list(range(37))


def test_warmup_linear_schedule_matches_formula():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = warmup_linear(opt, warmup_steps=4, total_steps=10)
    got = []
    for _ in range(10):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [(s + 1) / 4 if s < 4 else (10 - s) / 6 for s in range(10)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_peak_bytes_sees_known_allocations():
    from torch_ref.finetune.memory import peak_bytes

    def work():
        a = torch.ones(1000, 1000)  # 4 MB
        b = a * 2  # 4 MB more while a is alive
        del a
        return b.sum()

    peak, _ = peak_bytes(work)
    assert 8_000_000 <= peak < 8_100_000


def test_training_step_memory_counts_activations_and_gradients():
    """The backward's peak is counted from before the forward: the activations the forward saved
    (exp keeps its 16 MB output) are still held when the 4 MB weight gradient is made."""
    from torch_ref.finetune.memory import training_step_memory

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(1000, 1000) * 1e-3)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            big = torch.exp((input_ids @ self.weight).repeat(1, 1000))  # (4, 1e6), saved for backward
            return big.view(4, 1000, 1000).sum(-1)[:, :2]

    batch = {"input_ids": torch.randn(4, 1000), "attention_mask": None, "labels": torch.tensor([0, 1, 0, 1])}
    saved = 4 * 1_000_000 * 4  # exp's output, float32
    grad_w = 1000 * 1000 * 4
    mem = training_step_memory(Toy(), batch)
    assert mem["forward_bytes"] >= saved
    assert mem["backward_bytes"] >= saved + grad_w
    assert mem["backward_bytes"] < 4 * saved  # nothing counted twice


# ---------------------------------------------------------------------------------------------------
# training loop


def _cfg(tmp_path, model, **kw):
    base = dict(model=model, epochs=3, batch_size=8, max_length=16, out=str(tmp_path / "run"), seed=0, warmup=0.1)
    base.update(kw)
    return TrainConfig(**base)


def test_training_learns_the_toy_task(tiny, tmp_path):
    res = train(_cfg(tmp_path, tiny["bert"], lr=1e-2, epochs=8), sentiment_task(n_train=96), quiet=True)
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < 0.5 * losses[0]
    assert res["best_val_acc"] >= 0.75 and res["best_val_acc"] == max(h["val_acc"] for h in res["history"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test_acc"] == res["test_acc"] and (tmp_path / "run" / "curves.png").stat().st_size > 1000


def test_head_tuning_lowers_the_loss(tiny, tmp_path):
    """Even on a random frozen encoder, a classifier on the mean token state must learn something."""
    res = train(_cfg(tmp_path, tiny["roberta"], method="head", lr=1e-1, epochs=8), sentiment_task(), quiet=True)
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("kind,method", [("distilbert", "lora"), ("roberta", "prefix"), ("bert", "head"),
                                         ("bert", "lora")])
def test_only_trainable_parts_change(tiny, tmp_path, kind, method):
    """After training, every frozen weight is bit-identical to a fresh build; the trainable ones moved
    (LoRA's B starts at zero, so a nonzero B proves gradients reached the adapter)."""
    cfg = _cfg(tmp_path, tiny[kind], method=method, lr=1e-2, epochs=1, prefix_length=4)
    train(cfg, sentiment_task(), quiet=True)
    trained, _, _ = load_checkpoint(tmp_path / "run" / "best")
    fresh = build_classifier(cfg.spec(2), tiny[kind])
    after = dict(trained.named_parameters())
    for name, p in fresh.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, after[name]), name
        else:
            assert torch.equal(p, after[name]), name
    if method == "lora":
        assert all(bool(after[n].detach().abs().sum() > 0) for n in after if ".lora_B." in n)


def test_resume_after_interruption_matches_uninterrupted_run(tiny, tmp_path):
    task = sentiment_task()
    whole = train(_cfg(tmp_path / "a", tiny["bert"], lr=2e-3), task, quiet=True)
    part = train(_cfg(tmp_path / "b", tiny["bert"], lr=2e-3), task, quiet=True, stop_after_epoch=1)
    assert part["interrupted_after_epoch"] == 1
    resumed = train(_cfg(tmp_path / "b", tiny["bert"], lr=2e-3, resume=True), task, quiet=True)
    assert resumed["history"] == [
        {**h, "train_time_s": r["train_time_s"], "epoch_time_s": r["epoch_time_s"]}
        for h, r in zip(whole["history"], resumed["history"])
    ]
    assert resumed["test_acc"] == whole["test_acc"] and resumed["test_loss"] == whole["test_loss"]
    a, _, _ = load_checkpoint(tmp_path / "a" / "run" / "best")
    b, _, _ = load_checkpoint(tmp_path / "b" / "run" / "best")
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    with pytest.raises(InputError, match="resume"):
        train(_cfg(tmp_path / "b", tiny["bert"], lr=1e-3, resume=True), task, quiet=True)


def test_predict_from_checkpoint_matches_model(tiny, tmp_path):
    task = sentiment_task()
    train(_cfg(tmp_path, tiny["distilbert"], method="prefix", prefix_length=4, lr=1e-2, epochs=2), task, quiet=True)
    texts = ["the tea was great", "awful stale cookies"]
    out = predict(tmp_path / "run" / "best", texts)
    model, tok, meta = load_checkpoint(tmp_path / "run" / "best")
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(enc["input_ids"], enc["attention_mask"]), -1)
    for row, p in zip(out, probs):
        assert row["label"] == meta["label_names"][int(p.argmax())]
        np.testing.assert_allclose(list(row["probs"].values()), p.numpy(), rtol=1e-5)
        assert sum(row["probs"].values()) == pytest.approx(1.0)
    with pytest.raises(InputError, match="checkpoint"):
        predict(tmp_path / "nothing", texts)


def test_pair_task_trains_with_token_types(tiny, tmp_path):
    """[CLS] A [SEP] B [SEP] with segment ids for BERT; DistilBERT (no segments) ignores them."""
    from transformers import AutoTokenizer

    rng = random.Random(0)
    a = [rng.choice(FILLER) + " " + rng.choice(GOOD + BAD) for _ in range(24)]
    b = [rng.choice(GOOD) if i % 2 else rng.choice(BAD) for i in range(24)]
    ds = TextDataset(a, [i % 2 for i in range(24)], b)
    tok = AutoTokenizer.from_pretrained(tiny["bert"])
    batch = next(iter(make_loader(ds, tok, 4, 16, shuffle=False)))
    assert int(batch["token_type_ids"].max()) == 1
    task = Task("toy-pairs", ["no", "yes"], ds, ds.take(8), ds.take(8, seed=1))
    for kind in ("bert", "distilbert"):
        res = train(_cfg(tmp_path / kind, tiny[kind], lr=1e-2, epochs=8), task, quiet=True)
        assert res["history"][-1]["train_loss"] < res["history"][0]["train_loss"]


# ---------------------------------------------------------------------------------------------------
# studies (tiny settings)


def test_overfit_study_reaches_100_percent(tiny, tmp_path):
    from rich.console import Console

    from torch_ref.finetune.studies import overfit, study_config

    cfg = study_config("overfit", model=tiny["bert"], lr=1e-2, epochs=30, out=str(tmp_path / "overfit"))
    res = overfit(cfg, Console(quiet=True), quiet=True, task=sentiment_task())
    assert res["examples"] == 10 and res["passed"] and res["final_train_acc"] == 1.0


def test_methods_study_reports_formula_counts_and_memory(tiny, tmp_path):
    from rich.console import Console

    from torch_ref.finetune.studies import methods, study_config

    cfg = study_config("methods", model=tiny["roberta"], epochs=1, max_length=16, prefix_length=4,
                       out=str(tmp_path / "methods"))
    # RSS children off here (tests/test_finetune_memory.py runs them); the NumPy engine runs BERT only.
    res = methods(cfg, Console(quiet=True), quiet=True, task=sentiment_task(), rss=False)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"full", "head", "prefix", "lora"}
    for r in rows.values():
        assert r["trainable_params"] == r["formula_params"]
        assert r["forward_mib"] > 0 and r["backward_mib"] > 0
        assert r["numpy_forward_mib"] is None and r["torch_rss_mib"] is None
    assert "roberta" in res["numpy_note"]
    assert rows["head"]["trainable_params"] < rows["prefix"]["trainable_params"] < rows["full"]["trainable_params"]
    assert (tmp_path / "methods" / "methods.png").stat().st_size > 1000


def test_grid_chooses_on_validation(tiny, tmp_path):
    from rich.console import Console

    from torch_ref.finetune.studies import grid, study_config

    cfg = study_config("grid", model=tiny["bert"], max_length=16, out=str(tmp_path / "grid"))
    res = grid(cfg, Console(quiet=True), quiet=True, lrs=[1e-3, 1e-2], epoch_list=[1, 2], task=sentiment_task())
    assert len(res["rows"]) == 4
    assert res["chosen"] == max(res["rows"], key=lambda r: r["val_acc"])


def test_optimizers_and_pretrained_vs_scratch_studies(tiny, tmp_path):
    from rich.console import Console

    from torch_ref.finetune.studies import optimizers, pretrained_vs_scratch, study_config

    quiet = Console(quiet=True)
    cfg = study_config("optimizers", model=tiny["bert"], epochs=2, max_length=16, out=str(tmp_path / "opt"))
    res = optimizers(cfg, quiet, quiet=True, task=sentiment_task())
    assert [r["optimizer"] for r in res["rows"]] == ["adamw", "sgd", "rmsprop"]
    assert len(set(json.dumps(h) for h in res["histories"].values())) == 3  # three different runs
    cfg = study_config("pretrained-vs-scratch", model=tiny["bert"], epochs=2, max_length=16, lr=1e-2,
                       out=str(tmp_path / "pvs"))
    res = pretrained_vs_scratch(cfg, quiet, quiet=True, task=sentiment_task())
    assert [r["init"] for r in res["rows"]] == ["pretrained", "from scratch"]
    assert (tmp_path / "pvs" / "pretrained_vs_scratch.png").stat().st_size > 1000


def test_batch_size_study_doubles_until_budget(tiny, tmp_path):
    """With a budget between the measured peaks of batch 2 and batch 4, the answer must be 2."""
    from rich.console import Console

    from torch_ref.finetune.studies import batch_size, study_config

    cfg = study_config("batch-size", model=tiny["bert"], max_length=32, out=str(tmp_path / "bs"))
    probe = batch_size(cfg, Console(quiet=True), quiet=True, budget_gb=1000.0, max_batch=8)
    peaks = {r["batch"]: r["peak_gb"] for r in probe["rows"]}
    assert sorted(peaks) == [1, 2, 4, 8] and probe["largest_batch"] == 8
    assert peaks[1] < peaks[2] < peaks[4] < peaks[8]  # activations grow with the batch
    res = batch_size(cfg, Console(quiet=True), quiet=True, budget_gb=(peaks[2] + peaks[4]) / 2, max_batch=8)
    assert res["largest_batch"] == 2 and res["rows"][-1]["fits"] is False


def test_topic_news_predicts_four_stories(tiny, tmp_path):
    from rich.console import Console

    from torch_ref.finetune.studies import NEWS_TEXTS, study_config, topic_news

    rng = random.Random(0)
    words = {0: "election senate mayor", 1: "she ran laughed kissed", 2: "theory data measured", 3: "church garden recipe"}
    texts = [" ".join(rng.sample(words[i % 4].split(), 3)) for i in range(40)]
    ds = TextDataset(texts, [i % 4 for i in range(40)])
    task = Task("toy-topics", list(BROWN_GROUPS), ds, ds.take(12), ds.take(12, seed=1))
    cfg = study_config("topic-news", model=tiny["bert"], epochs=1, max_length=48, out=str(tmp_path / "news"))
    res = topic_news(cfg, Console(quiet=True), quiet=True, task=task)
    assert len(res["predictions"]) == len(NEWS_TEXTS) == 4
    for row in res["predictions"]:
        assert row["predicted"] in BROWN_GROUPS and abs(sum(row["probs"].values()) - 1) < 1e-6


def test_checkpoint_folder_replacement_is_all_or_nothing(tmp_path):
    from torch_ref.finetune.train import _existing_dir, _replace_dir

    target = tmp_path / "best"
    _replace_dir(target, lambda d: (d / "run.json").write_text('{"epoch": 1}'))

    def crash(d):
        (d / "run.json").write_text('{"epoch": 2}')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _replace_dir(target, crash)
    assert json.loads((target / "run.json").read_text()) == {"epoch": 1}  # the old one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no half-written folder left
    # A crash between the two renames leaves only the previous copy, moved aside: it is found.
    target.rename(tmp_path / ".best.old")
    assert _existing_dir(target) == tmp_path / ".best.old"


def test_precision_bf16_autocasts_on_cpu_and_stays_near_float32(tiny, tmp_path):
    """--precision bf16 forces autocast where auto would not (a CPU): the record says bf16, and the
    losses move off float32's by bf16 rounding (8 bits of mantissa) but no further."""
    task = sentiment_task()
    fp32 = train(_cfg(tmp_path / "a", tiny["bert"], lr=2e-3, epochs=1, precision="fp32"), task, quiet=True)
    bf16 = train(_cfg(tmp_path / "b", tiny["bert"], lr=2e-3, epochs=1, precision="bf16"), task, quiet=True)
    assert (fp32["precision"], bf16["precision"]) == ("no", "bf16")
    a, b = fp32["history"][0]["train_loss"], bf16["history"][0]["train_loss"]
    assert a != b and abs(a - b) < 0.05 * a
    with pytest.raises(InputError, match="precision"):
        TrainConfig(precision="fp16")
