"""`bench finetune` end to end on MiniLM's first layer and a tiny batch of reviews (the structure and
the three backends' agreement on the first step's loss; speed is never asserted)."""
from __future__ import annotations

import json

import pytest

from triptych.common.tolerances import assert_close


def test_bench_finetune_json(tmp_path, capsys):
    from triptych import cli

    code = cli.main(["bench", "finetune", "--methods", "lora,head", "--backends", "numpy,jax", "--batch", "2",
                     "--tokens", "16", "--rounds", "1", "--layers", "1", "--json", "--out", str(tmp_path)])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads((tmp_path / "finetune.json").read_text())
    assert [(r["method"], r["backend"]) for r in res["rows"]] == [
        ("lora", "numpy"), ("lora", "jax"), ("lora", "torch"), ("head", "numpy"), ("head", "jax"), ("head", "torch")]
    for r in res["rows"]:
        assert r["median_s"] > 0
        ref = next(x for x in res["rows"] if x["method"] == r["method"] and x["backend"] == "torch")
        assert_close(r["first_loss"], ref["first_loss"], "float32", kind="grad", what=f"{r['method']} {r['backend']}")
        # the convention of every `bench`: torch's time over the backend's, above 1 = faster than torch
        assert r["ratio_to_torch"] == pytest.approx(ref["median_s"] / r["median_s"], rel=1e-12)
    assert res["tokens"] <= 16 and res["batch"] == 2 and res["layers"] == 1
    import jax
    import torch

    # where each step ran: torch on the GPU when it sees one, as the fine-tuning backend trains
    assert res["devices"] == {"numpy": "cpu", "jax": jax.default_backend(),
                              "torch": "cuda" if torch.cuda.is_available() else "cpu"}


def test_bench_finetune_refuses_an_unknown_method(capsys):
    from triptych import cli

    code = cli.main(["bench", "finetune", "--methods", "lora,adapters"])
    assert code == 2
    assert "--methods" in capsys.readouterr().err
