"""`bench tokenizer` runs end to end on a slice of Austen (a smoke test: speed is never asserted)."""
from __future__ import annotations

import json

import pytest


def test_bench_tokenizer_json(tmp_path, capsys):
    from triptych import cli
    code = cli.main(["bench", "tokenizer", "--max-bytes", "60000", "--vocab-size", "400", "--repeats", "1",
                     "--tie-break", "library", "--no-smollm2", "--json", "--out", str(tmp_path)])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads((tmp_path / "tokenizer.json").read_text())
    t = res["training"]
    assert t["merges"] == t["library_merges"] == 400 - 257
    assert t["first_difference"] is None and t["identical_leading_merges"] == t["merges"]  # the library's tie rule
    assert [r["encoder"] for r in res["encoding"]] == ["ours (empty cache)", "ours (warm cache)", "tokenizers library"]
    assert all(r["mb_per_s"] > 0 and r["tokens"] > 0 for r in res["encoding"])


def test_bench_tokenizer_rejects_bad_flags(capsys):
    from triptych import cli
    with pytest.raises(SystemExit) as e:  # argparse: one line, exit 2
        cli.main(["bench", "tokenizer", "--vocab-size", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--vocab-size: expected a positive integer, got '0'" in err and "Traceback" not in err
