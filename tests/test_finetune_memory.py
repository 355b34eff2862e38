"""Memory of one fine-tuning step, torch beside the NumPy engine (torch_ref/finetune/numpy_step.py,
rss.py, study_methods.py). References: known allocations give known bytes; the NumPy engine runs the
torch model's own weights (its logits are torch's); its peaks hold at least what its forward must keep
and what its backward must make, sizes computed from the model's shapes.

CPU: three spawned child processes (one bare, two that load the tiny BERT), about 10 s of the total.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from triptych.common.tolerances import assert_close

METHODS = ("full", "head", "prefix", "lora")

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _touch(n_mib: int):
    """step_peak_rss's setup (runs in the child): a step that allocates n_mib MiB and writes every page."""
    def step():
        block = np.ones(n_mib * 2**20 // 8)  # ones, not empty: written pages are resident pages
        return float(block[::512].sum())
    return step


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """(tiny BERT folder, a loader batch of 8 toy reviews padded to their longest)."""
    from test_finetune import make_tiny_model, sentiment_task

    from torch_ref.finetune.data import make_loader
    from torch_ref.finetune.models import load_tokenizer

    path = make_tiny_model(tmp_path_factory.mktemp("memory") / "bert", "bert")
    batch = next(iter(make_loader(sentiment_task().train.take(8, 0), load_tokenizer(path), 8, 16, shuffle=False)))
    return path, batch


def _model(path, method):
    from torch_ref.finetune.models import ModelSpec, build_classifier

    return build_classifier(ModelSpec(path, method, 2, prefix_length=4, lora_r=4), path)


def test_traced_peak_bytes_sees_numpy_arrays():
    from torch_ref.finetune.numpy_step import traced_peak_bytes

    def work():
        a = np.ones((1000, 1000), np.float32)  # 4 MB
        b = a * 2  # 4 MB more while a is alive
        del a
        return b.sum()

    peak, _ = traced_peak_bytes(work)
    assert 8_000_000 <= peak < 8_100_000


def test_step_peak_rss_sees_touched_pages():
    from torch_ref.finetune.rss import step_peak_rss

    n = 48
    got = step_peak_rss(_touch, n)
    # Below: the RSS read before the step may hold a few pages the step's start frees (measured 12 KiB
    # short once, in a CI run on a loaded machine). Above, 4 MiB: page tables, the interpreter's own.
    assert n - 0.25 <= got["mib"] < n + 4, got


@pytest.mark.parametrize("method", METHODS)
def test_numpy_weights_give_the_torch_models_logits(bert, method):
    """The NumPy engine on numpy_weights(model) computes the torch model's logits (dropout off):
    the same weights under our keys, split into frozen and trainable as the model trains them."""
    import torch

    from numpy_impl.bert_finetune import bert_finetune_logits
    from torch_ref.finetune.numpy_step import numpy_batch, numpy_weights

    path, batch = bert
    model = _model(path, method).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # B starts at zero: give the adapters something to change
        ref = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    frozen, trainable = numpy_weights(model)
    assert sum(v.size for v in trainable.values()) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    ids, mask, types, _ = numpy_batch(batch)
    got = bert_finetune_logits(method, frozen, trainable, ids, mask, types, model.config.num_attention_heads,
                               model.config.layer_norm_eps, float(model.spec.lora_alpha))
    assert_close(got, ref.numpy(), np.float32, what=f"{method} logits")


def test_numpy_step_memory_keeps_activations_and_makes_gradients(bert):
    """full's forward keeps every activation the hand-written backward reads (BertLayerCache: per layer
    q, k, v, context, attn_out, attn_resid, attn_ln, mlp_out, mlp_resid, mlp_ln (B, T, C), weights
    (B, H, T, T), fc and gelu (B, T, F); the embeddings' sum and LayerNorm output (B, T, C)), float32.
    full's backward holds a gradient for every encoder weight, which head's never makes."""
    from torch_ref.finetune.numpy_step import numpy_step_memory

    path, batch = bert
    head, full = _model(path, "head").train(), _model(path, "full").train()
    mem = {"head": numpy_step_memory(head, batch), "full": numpy_step_memory(full, batch)}
    c = head.config
    B, T = batch["input_ids"].shape
    C, H, F, N = c.hidden_size, c.num_attention_heads, c.intermediate_size, c.num_hidden_layers
    layer = 4 * (10 * B * T * C + B * H * T * T + 2 * B * T * F)
    kept = N * layer + 4 * 2 * B * T * C
    assert kept <= mem["full"]["forward_bytes"] < 3 * kept  # the upper bound: nothing counted twice
    # head's gradient stops at the encoder's output: at its peak (the last layer) it holds no earlier
    # layer's activations, N - 1 layers fewer than full (within 10%: the layers' temporaries differ)
    assert mem["full"]["forward_bytes"] - mem["head"]["forward_bytes"] >= 0.9 * (N - 1) * layer
    encoder = sum(p.numel() for n, p in full.named_parameters() if "classifier" not in n)  # with the pooler
    assert mem["full"]["backward_bytes"] - mem["head"]["backward_bytes"] >= 4 * encoder


def test_numpy_unsupported_names_the_model_type():
    from transformers import BertConfig, DistilBertConfig

    from torch_ref.finetune.numpy_step import numpy_unsupported

    assert numpy_unsupported(BertConfig()) is None
    assert "distilbert" in numpy_unsupported(DistilBertConfig())
    assert "gelu_new" in numpy_unsupported(BertConfig(hidden_act="gelu_new"))


def test_methods_study_reports_numpy_beside_torch(bert, tmp_path):
    """One method end to end: every memory field measured, the two tables fit 80 columns, the
    rows and the plot written."""
    from rich.console import Console
    from test_finetune import sentiment_task

    from torch_ref.finetune.study_methods import MEMORY_FIELDS
    from torch_ref.finetune.studies import methods, study_config

    path, _ = bert
    cfg = study_config("methods", model=path, epochs=1, max_length=16, batch_size=8, out=str(tmp_path / "m"))
    console = Console(record=True, width=80)
    res = methods(cfg, console, names=["head"], task=sentiment_task())
    row = res["rows"][0]
    assert all(row[f] is not None and row[f] >= 0 for f in MEMORY_FIELDS), row
    assert row["forward_mib"] > 0 and row["numpy_forward_mib"] > 0
    assert "numpy_note" not in res and res["rss_how"]
    text = console.export_text()
    assert "memory of one training step (MiB)" in text
    assert max(len(line) for line in text.splitlines()) <= 80
    saved = json.loads((tmp_path / "m" / "results.json").read_text())
    assert saved["rows"][0]["numpy_rss_mib"] == row["numpy_rss_mib"]
    assert (tmp_path / "m" / "methods.png").stat().st_size > 1000
