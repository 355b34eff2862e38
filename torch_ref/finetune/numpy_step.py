"""One training step of the NumPy engine (numpy_impl/bert_finetune.py's hand-written backward +
numpy_impl/optim.py's AdamW) on the weights of a torch EncoderClassifier, and its memory measured the
way memory.training_step_memory measures torch's:

    forward_bytes   peak bytes above the level before the forward (weights excluded)
    backward_bytes  peak bytes during the backward, counted from that same level (so the activations
                    the forward left held count, as they do for torch)

NumPy reports every array buffer it allocates to tracemalloc, so tracemalloc's traced total is the
bytes NumPy (and Python) hold; reset_peak + get_traced_memory give a peak above any start.
bert_finetune_loss_and_grads runs forward and backward in one call; its backward begins with the
call of _head_backward, so that one function is wrapped for the duration of the measurement to read
the traced level at the boundary.

Torch trains with dropout (training mode) and the NumPy engine has none, so torch also keeps its
dropout masks; the two columns measure the same step of the same weights otherwise.
"""
from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from triptych.common.bert_params import params_from_hf

__all__ = ["numpy_unsupported", "numpy_weights", "numpy_batch", "traced_peak_bytes", "numpy_step_memory",
           "torch_step_setup", "numpy_step_setup"]

_BATCH_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def numpy_unsupported(config) -> str | None:
    """Why the NumPy engine cannot run this encoder (None: it can). It is written for BERT's post-LN
    layers with erf GELU and learned absolute positions (numpy_impl/bert.py)."""
    kind = getattr(config, "model_type", "?")
    if kind != "bert":
        return f"the NumPy engine runs BERT encoders only (numpy_impl/bert_finetune.py), not {kind}"
    if getattr(config, "hidden_act", "gelu") != "gelu":
        return f"the NumPy engine's GELU is the erf one, this BERT uses {config.hidden_act}"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return "the NumPy engine has learned absolute positions only"
    return None


def numpy_weights(model) -> tuple[dict, dict]:
    """(frozen, trainable): a BERT EncoderClassifier's weights as float32 NumPy dicts under our keys
    (triptych/common/bert_finetune.py), split as the model trains them. Trainable arrays share
    memory with the torch parameters; the frozen ones are copies.

    Shapes: model -> ({key: array}, {key: array}) with the torch tensors' shapes
    """
    from torch_ref.bert_finetune import trainable_of

    trainable = {k: t.detach().cpu().numpy() for k, t in trainable_of(model).items()}
    hf = {}
    for name, t in model.named_parameters():
        for lead in ("inner.", "base_model.model.", "bert."):
            name = name.removeprefix(lead)
        if "lora_" in name or "modules_to_save" in name or "original_module" in name:
            continue  # peft's adapters and its copies of the head: trainable_of has the trained ones
        hf[name.replace(".base_layer.", ".")] = t
    encoder = params_from_hf({k: v for k, v in hf.items() if k.startswith(("embeddings.", "encoder."))})
    if "pooler.dense.weight" in hf:
        encoder["pooler.w"] = hf["pooler.dense.weight"].detach().cpu().numpy().astype(np.float32)
        encoder["pooler.b"] = hf["pooler.dense.bias"].detach().cpu().numpy().astype(np.float32)
    frozen = {k: v for k, v in encoder.items() if k not in trainable}
    return frozen, trainable


def numpy_batch(batch: dict) -> tuple:
    """(ids, mask, types or None, labels) as NumPy int64 from a loader's batch (torch or NumPy)."""
    def arr(v):
        return None if v is None else np.asarray(v.cpu() if hasattr(v, "cpu") else v).astype(np.int64)
    return tuple(arr(batch.get(k)) for k in _BATCH_KEYS)


def _engine_args(model) -> dict:
    config = model.config
    return {"n_heads": int(config.num_attention_heads), "eps": float(config.layer_norm_eps),
            "lora_alpha": float(model.spec.lora_alpha)}


@contextmanager
def _traced():
    """tracemalloc on (if it was off) with its peak reset; yields the traced bytes held at the start."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        gc.collect()
        tracemalloc.reset_peak()
        yield tracemalloc.get_traced_memory()[0]
    finally:
        if started:
            tracemalloc.stop()


def traced_peak_bytes(fn: Callable[[], object]) -> tuple[int, object]:
    """(peak bytes NumPy and Python allocated while fn() ran, above the level before it; fn's value)."""
    with _traced() as base:
        result = fn()
        return tracemalloc.get_traced_memory()[1] - base, result


def numpy_step_memory(model, batch: dict) -> dict:
    """forward_bytes and backward_bytes (module docstring) of the NumPy engine's forward and backward
    on model's weights and `batch` (a loader's batch: input_ids, attention_mask, token_type_ids, labels).

    Shapes: batch values (B, T), labels (B,) -> {"forward_bytes": int, "backward_bytes": int}
    """
    import numpy_impl.bert_finetune as engine

    frozen, trainable = numpy_weights(model)
    ids, mask, types, labels = numpy_batch(batch)
    original, marks = engine._head_backward, {}

    def boundary(*args, **kwargs):
        marks["forward_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()  # from here on the peak is the backward's
        return original(*args, **kwargs)

    engine._head_backward = boundary
    try:
        with _traced() as base:
            engine.bert_finetune_loss_and_grads(model.spec.method, frozen, trainable, ids, mask, types, labels,
                                                **_engine_args(model))
            backward_peak = tracemalloc.get_traced_memory()[1]
    finally:
        engine._head_backward = original
    if "forward_peak" not in marks:
        raise RuntimeError("numpy_impl.bert_finetune no longer calls _head_backward: the probe saw no backward")
    return {"forward_bytes": marks["forward_peak"] - base, "backward_bytes": backward_peak - base}


# ---------------------------------------------------------------------------------------------------
# setups for rss.step_peak_rss: run in a fresh process, return the step to measure


def _child_model(spec: dict, path: str, threads: int):
    import torch

    from torch_ref.finetune.models import ModelSpec, build_classifier

    torch.set_num_threads(threads)
    return build_classifier(ModelSpec(**spec), path).train()


def torch_step_setup(spec: dict, path: str, batch: dict, threads: int, lr: float, weight_decay: float):
    """The torch step: forward, cross-entropy, backward, AdamW step (its moments made in the step)."""
    import torch
    import torch.nn.functional as F

    model = _child_model(spec, path, threads)
    ids, mask, types, labels = (None if v is None else torch.as_tensor(v) for v in numpy_batch(batch))
    # One step on a 1 x 4 slice first: lazy one-time setup (BLAS buffers, autograd's threads) is
    # not the step's memory. No optimizer yet, and the gradients are dropped.
    F.cross_entropy(model(ids[:1, :4], mask[:1, :4], None if types is None else types[:1, :4]), labels[:1]).backward()
    model.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)

    def step():
        F.cross_entropy(model(ids, mask, types).float(), labels).backward()
        opt.step()
    return step


def numpy_step_setup(spec: dict, path: str, batch: dict, threads: int, lr: float, weight_decay: float):
    """The NumPy step on the same weights: loss and grads, AdamW moments made, one AdamW step."""
    from numpy_impl.bert_finetune import bert_finetune_loss_and_grads
    from numpy_impl.optim import adamw_init, adamw_step

    model = _child_model(spec, path, threads)  # kept alive: the trainable arrays share its memory
    frozen, trainable = numpy_weights(model)
    kw, method = _engine_args(model), spec["method"]
    ids, mask, types, labels = numpy_batch(batch)
    short = (ids[:1, :4], mask[:1, :4], None if types is None else types[:1, :4], labels[:1])
    bert_finetune_loss_and_grads(method, frozen, trainable, *short, **kw)  # warm-up, as torch_step_setup

    def step():
        _, grads = bert_finetune_loss_and_grads(method, frozen, trainable, ids, mask, types, labels, **kw)
        adamw_step(trainable, grads, adamw_init(trainable), lr, (0.9, 0.999), 1e-8, weight_decay)
    return step
