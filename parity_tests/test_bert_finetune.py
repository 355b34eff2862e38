"""Fine-tuning the real all-MiniLM-L6-v2 (6 layers, C = 384) on a batch of real fine-foods reviews,
tokenized and padded by the fine-tuning backend's own pipeline (torch_ref/finetune/data.py's
make_loader, MiniLM's tokenizer): every trainable parameter's gradient of every method (full, head,
prefix, lora) from NumPy's hand-written backward and from JAX's jax.grad, against the referee, torch
autograd through the backend's EncoderClassifier (peft for LoRA: the same A, B, alpha / r, targets);
and 20 AdamW steps of NumPy (numpy_impl/optim.py) vs torch.optim.AdamW, loss by loss.

Adapters are drawn with B != 0 and the heads at random, so no gradient can agree trivially; the
batch has padded rows, so the padding mask is on the path of every gradient."""
from __future__ import annotations

import numpy as np
import pytest

from triptych.common.bert_finetune import LORA_TARGETS
from triptych.common.tolerances import assert_close

pytestmark = pytest.mark.usefixtures("torch_one_thread")

ALPHA = 16.0
N_HEADS = 12
EPS = 1e-12


@pytest.fixture(scope="module")
def minilm64():
    """The real checkpoint in float64, with its [CLS] pooler (pooler.w, pooler.b) kept."""
    from safetensors.numpy import load_file

    from triptych.pretrained import ModelMissingError, minilm

    try:
        params, config = minilm.load("float64")
        raw = load_file(str(minilm.model_path() / "model.safetensors"))
    except ModelMissingError as e:
        pytest.skip(str(e))
    params["pooler.w"] = raw["pooler.dense.weight"].astype(np.float64)
    params["pooler.b"] = raw["pooler.dense.bias"].astype(np.float64)
    return params, config


@pytest.fixture(scope="module")
def reviews():
    """make_loader's first batches of 4 fine-foods reviews at max_length 32, as NumPy: each batch
    (ids, mask, types, labels); the first batch's reviews are chosen to include short (padded) ones."""
    from torch_ref.finetune.data import load_task, make_loader
    from triptych.pretrained import minilm

    train = load_task("fine-foods").train
    order = sorted(range(len(train)), key=lambda i: len(train.texts[i]))
    picked = order[:2] + list(range(2)) + list(range(2, 80))  # two short ones lead: padding in batch 0
    loader = make_loader(train.subset(picked), minilm.tokenizer(), batch_size=4, max_length=32, shuffle=False)
    batches = [tuple(b[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids", "labels"))
               for b in loader]
    return batches


def _padded_batch(reviews):
    batch = next(b for b in reviews if (b[1] == 0).any() and len(set(b[3])) == 2)
    return batch


def _trainable(method, params, n_classes=2, r=4, targets=("attn.w_q", "attn.w_v"), prefix_len=6, seed=0,
               lora_b_scale=0.05):
    rng = np.random.default_rng(seed)
    C = params["embed.word"].shape[1]
    t = {"classifier.w": rng.normal(0, 0.05, (n_classes, C)), "classifier.b": rng.normal(0, 0.05, n_classes)}
    if method == "full":
        t.update({k: v for k, v in params.items()})
    if method == "prefix":
        t["prefix"] = rng.normal(0, 0.02, (prefix_len, C))
    if method == "lora":
        n_layers = len({k.split(".")[1] for k in params if k.startswith("layers.")})
        for i in range(n_layers):
            for w in targets:
                d_out, d_in = params[f"layers.{i}.{w}"].shape
                t[f"layers.{i}.{w}.lora_A"] = rng.uniform(-1, 1, (r, d_in)) / np.sqrt(d_in)
                t[f"layers.{i}.{w}.lora_B"] = rng.normal(0, lora_b_scale, (d_out, r))
    return t


def _frozen(method, params, trainable):
    return {} if method == "full" else {k: v for k, v in params.items() if k not in trainable}


def _first_layers(params, n):
    return {k: v for k, v in params.items() if not k.startswith("layers.") or int(k.split(".")[1]) < n}


def _as(d, dtype):
    return {k: v.astype(dtype) for k, v in d.items()}


CASES = [("full", None), ("head", None), ("prefix", None), ("lora", ("attn.w_q", "attn.w_v")),
         ("lora", tuple(LORA_TARGETS))]


def _case(method, targets, params):
    trainable = _trainable(method, params, targets=targets or ())
    return _frozen(method, params, trainable), trainable


@pytest.mark.parametrize("method,targets", CASES)
def test_numpy_grads_equal_torch_float64(minilm64, reviews, method, targets):
    from numpy_impl.bert_finetune import bert_finetune_loss_and_grads
    from torch_ref.bert_finetune import bert_finetune_loss_and_grads as torch_loss_and_grads

    params, _ = minilm64
    frozen, trainable = _case(method, targets, params)
    batch = _padded_batch(reviews)
    loss, grads = bert_finetune_loss_and_grads(method, frozen, trainable, *batch, N_HEADS, EPS, ALPHA)
    ref_loss, ref = torch_loss_and_grads(method, frozen, trainable, *batch, N_HEADS, EPS, ALPHA)
    assert sorted(grads) == sorted(ref) == sorted(trainable)
    assert_close(loss, ref_loss, "float64", what="loss")
    for k in ref:
        if not k.endswith("attn.b_k"):  # b_k adds the same score to every key of a query: softmax ignores it
            assert np.abs(ref[k]).max() > 1e-8, k  # every other trainable tensor is on the loss's path
        assert_close(grads[k], ref[k], "float64", kind="grad", what=f"{method} {k}")


@pytest.mark.parametrize("method,targets", CASES)
def test_numpy_grads_equal_torch_float32(minilm64, reviews, method, targets):
    import torch

    from numpy_impl.bert_finetune import bert_finetune_loss_and_grads
    from torch_ref.bert_finetune import bert_finetune_loss_and_grads as torch_loss_and_grads

    params, _ = minilm64
    frozen, trainable = (_as(d, np.float32) for d in _case(method, targets, params))
    batch = _padded_batch(reviews)
    loss, grads = bert_finetune_loss_and_grads(method, frozen, trainable, *batch, N_HEADS, EPS, ALPHA)
    ref_loss, ref = torch_loss_and_grads(method, frozen, trainable, *batch, N_HEADS, EPS, ALPHA, dtype=torch.float32)
    assert_close(loss, ref_loss, "float32", kind="grad", what="loss")
    for k in ref:
        assert grads[k].dtype == np.float32
        assert_close(grads[k], ref[k], "float32", kind="grad", what=f"{method} {k}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method,targets", CASES[:4])
def test_jax_grads_equal_torch(minilm64, reviews, method, targets, dtype):
    import torch

    from jax_impl.bert_finetune import bert_finetune_loss_and_grads
    from torch_ref.bert_finetune import bert_finetune_loss_and_grads as torch_loss_and_grads

    params, _ = minilm64
    frozen, trainable = (_as(d, dtype) for d in _case(method, targets, params))
    batch = _padded_batch(reviews)
    loss, grads = bert_finetune_loss_and_grads(method, frozen, trainable, *batch, N_HEADS, EPS, ALPHA)
    ref_loss, ref = torch_loss_and_grads(method, frozen, trainable, *batch, N_HEADS, EPS, ALPHA,
                                         dtype=getattr(torch, dtype))
    assert sorted(grads) == sorted(ref)
    assert_close(float(loss), ref_loss, dtype, kind="grad", what="loss")
    for k in ref:
        assert np.asarray(grads[k]).dtype == np.dtype(dtype)
        assert_close(np.asarray(grads[k]), ref[k], dtype, kind="grad", what=f"jax {method} {k}")


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_with_logits_returns_the_steps_own_forward(minilm64, reviews, backend):
    """with_logits=True adds the logits of the forward the gradients came from: equal to torch's logits
    on the referee model, and the loss and gradients are the call's without it, bit for bit."""
    import importlib

    from torch_ref.bert_finetune import bert_finetune_logits as torch_logits

    mod = importlib.import_module(f"{backend}_impl.bert_finetune")
    params, _ = minilm64
    frozen, trainable = _case("lora", ("attn.w_q", "attn.w_v"), _first_layers(params, 2))
    batch = _padded_batch(reviews)
    loss, grads, logits = mod.bert_finetune_loss_and_grads("lora", frozen, trainable, *batch, N_HEADS, EPS, ALPHA,
                                                           with_logits=True)
    plain_loss, plain = mod.bert_finetune_loss_and_grads("lora", frozen, trainable, *batch, N_HEADS, EPS, ALPHA)
    ref = torch_logits("lora", frozen, trainable, *batch[:3], N_HEADS, EPS, ALPHA).detach().numpy()
    assert np.asarray(logits).shape == (len(batch[3]), 2)
    assert_close(np.asarray(logits), ref, "float64", what=f"{backend} logits")
    assert float(loss) == float(plain_loss)
    for k in plain:
        np.testing.assert_array_equal(np.asarray(grads[k]), np.asarray(plain[k]))


def _numpy_trajectory(method, frozen, trainable, batches, lr, betas, wd):
    from numpy_impl.bert_finetune import bert_finetune_loss_and_grads
    from numpy_impl.optim import adamw_init, adamw_step

    state, losses = adamw_init(trainable), []
    for b in batches:
        loss, grads = bert_finetune_loss_and_grads(method, frozen, trainable, *b, N_HEADS, EPS, ALPHA)
        trainable, state = adamw_step(trainable, grads, state, lr, betas, 1e-8, wd)
        losses.append(loss)
    return np.array(losses), trainable


def _torch_trajectory(method, frozen, trainable, batches, lr, betas, wd, dtype):
    """torch.optim.AdamW on the referee model; decay on matrices only, as numpy_impl/optim.py's rule."""
    import torch
    import torch.nn.functional as F

    from torch_ref.bert_finetune import finetune_model, trainable_of

    model = finetune_model(method, frozen, trainable, N_HEADS, EPS, ALPHA, getattr(torch, dtype))
    tensors = trainable_of(model)
    groups = [{"params": [t for t in tensors.values() if t.ndim >= 2], "weight_decay": wd},
              {"params": [t for t in tensors.values() if t.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, foreach=False)
    losses = []
    for ids, mask, types, labels in batches:
        logits = model(*(torch.as_tensor(a).long() for a in (ids, mask, types)))
        loss = F.cross_entropy(logits, torch.as_tensor(labels).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return np.array(losses), {k: t.detach().numpy().copy() for k, t in tensors.items()}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_adamw_trajectory_numpy_vs_torch(minilm64, reviews, method, dtype):
    """20 AdamW steps on 20 batches of reviews from the backend's start for lora (B = 0) and a small
    random prefix: NumPy (hand-written backward, numpy_impl/optim.py) and torch.optim.AdamW on the
    referee lose the same loss at every step. MiniLM's first 2 layers (the 6-layer gradients are
    checked above; 20 steps of 6 layers in two frameworks take minutes)."""
    params = _first_layers(minilm64[0], 2)
    trainable = _trainable(method, params, lora_b_scale=0.0)
    frozen = _as(_frozen(method, params, trainable), dtype)
    trainable = _as(trainable, dtype)
    batches = reviews[:20]
    assert len(batches) == 20
    args = (method, frozen, trainable, batches, 2e-3, (0.9, 0.999), 0.01)
    ref, ref_final = _torch_trajectory(*args, dtype)
    assert ref.std() > 0.05  # the batches differ, so equal trajectories are not equal constants
    losses, final = _numpy_trajectory(*args)
    assert_close(losses, ref, dtype, kind="trajectory", what=f"{method} numpy vs torch losses")
    if dtype == "float64":
        for k in ref_final:
            assert_close(final[k], ref_final[k], dtype, kind="grad", what=f"{k} after 20 steps")
