"""`bench decode` end to end on a tiny random Llama (a smoke test of the structure: speed is never asserted)."""
from __future__ import annotations

import json

import numpy as np
import pytest


def test_bench_decode_json(tmp_path, capsys):
    from triptych import cli
    from triptych.common.llama_config import llama_param_shapes
    from triptych.generation.bench import tiny_model

    code = cli.main(["bench", "decode", "--model", "tiny", "--rounds", "1", "--prompt-tokens", "24",
                     "--new-tokens", "4", "--backends", "numpy,jax", "--json", "--out", str(tmp_path)])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res == json.loads((tmp_path / "decode.json").read_text())
    assert [r["backend"] for r in res["rows"]] == ["numpy", "jax", "torch"]  # the reference is always added
    for r in res["rows"]:
        assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
        assert len(r["prefill_seconds"]) == len(r["decode_seconds"]) == 1
        assert r["same_tokens_as_reference"] is True
    torch_row = res["rows"][-1]
    assert torch_row["prefill_ratio_to_hf"] == torch_row["decode_ratio_to_hf"] == 1.0
    assert {(g["backend"], g["kind"]) for g in res["goals"]} == {("numpy", "decode"), ("jax", "decode"),
                                                                  ("numpy", "prefill"), ("jax", "prefill")}
    # The bound is bandwidth / bytes, the bytes counted here from the weight shapes independently:
    # every matrix and norm once, the tied head once more, one embedding row, and the KV cache.
    _, config = tiny_model()
    shapes = llama_param_shapes(config)
    n_weights = sum(int(np.prod(s)) for s in shapes.values()) + config.d_model  # embed counted as the head
    context = res["decode_prompt_tokens"] + res["new_tokens"] // 2
    kv = 2 * config.n_layers * config.n_kv_heads * context * config.d_head
    b = res["decode_bytes_per_token"]
    assert b["weights"] == 4 * n_weights and b["kv_cache"] == 4 * kv and b["total"] == 4 * (n_weights + kv)
    assert res["decode_bound_tokens_per_s"] == pytest.approx(res["copy_bandwidth_bytes_per_s"] / b["total"])
    assert res["prefill_bound_tokens_per_s"] == pytest.approx(
        res["matmul_peak_gflops"] * 1e9 * res["prompt_tokens"] / res["prefill_flops"])


def test_bench_decode_rejects_unknown_backend(capsys):
    from triptych import cli
    assert cli.main(["bench", "decode", "--backends", "numpy,tpu", "--model", "tiny"]) == 2
    assert "--backends: expected a comma-separated subset of" in capsys.readouterr().err
