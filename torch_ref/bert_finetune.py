"""The referee for numpy_impl/bert_finetune.py: the fine-tuning backend's own classifier
(torch_ref/finetune/models.py's EncoderClassifier) around Hugging Face's BertForSequenceClassification
(full, lora) or BertModel (head, prefix) holding our weights, peft's LoRA for lora (models._add_lora
for the default query/value targets, the same LoraConfig on other modules otherwise), eval mode
(dropout off), differentiated by torch autograd. Keys: triptych/common/bert_finetune.py.
"""
from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from triptych.common.bert_finetune import DEFAULT_LORA_TARGETS, LORA_TARGETS, adapter_targets, check_finetune
from triptych.common.bert_params import _key_map, params_to_hf
from torch_ref.bert import BERT_EPS

__all__ = ["bert_finetune_logits", "bert_finetune_loss", "bert_finetune_loss_and_grads"]
# The torch model itself and its trainable tensors under our keys: what a torch training loop holds.
__backend_only__ = ["finetune_model", "trainable_of", "grads_of"]


def _n_layers(params: dict) -> int:
    return len({k.split(".")[1] for k in params if k.startswith("layers.")})


def _config(params: dict, n_heads: int, eps: float, n_classes: int):
    from transformers import BertConfig

    word, pos, types = params["embed.word"], params["embed.position"], params["embed.token_type"]
    return BertConfig(
        vocab_size=word.shape[0], hidden_size=word.shape[1], max_position_embeddings=pos.shape[0],
        type_vocab_size=types.shape[0], num_attention_heads=n_heads, num_hidden_layers=_n_layers(params),
        intermediate_size=params["layers.0.mlp.w_fc"].shape[0], layer_norm_eps=eps, hidden_act="gelu",
        num_labels=n_classes, attn_implementation="eager", pad_token_id=0)


def _tensor(x, dtype):
    return torch.as_tensor(np.array(x)).to(dtype)


def _load(module, state: dict, dtype) -> None:
    missing, unexpected = module.load_state_dict({k: _tensor(v, dtype) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"BERT classifier: missing {missing[:4]}, unexpected {unexpected[:4]}")


def _lora(model, trainable: dict, lora_alpha: float):
    """peft on `model` with the adapters' targets and rank; A and B copied from trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    from torch_ref.finetune.models import ModelSpec, _add_lora

    ranks = adapter_targets(trainable)
    r = set(ranks.values())
    if len(r) != 1:
        raise ValueError("trainable: peft's LoraConfig takes one rank r; these adapters have several")
    r = r.pop()
    locals_ = sorted({k.split(".", 2)[-1] for k in ranks})
    layers = sorted({int(k.split(".")[1]) for k in ranks})
    if locals_ == sorted(DEFAULT_LORA_TARGETS) and layers == list(range(model.config.num_hidden_layers)):
        spec = ModelSpec(method="lora", n_classes=model.config.num_labels, lora_r=r, lora_alpha=lora_alpha,
                         lora_dropout=0.0)
        return _add_lora(model, spec, "bert")  # the backend's own call
    paths = "|".join(re.escape(f"bert.encoder.layer.{k.split('.')[1]}.{LORA_TARGETS[k.split('.', 2)[-1]]}")
                     for k in ranks)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=lora_alpha, lora_dropout=0.0,
                        target_modules=f"({paths})", modules_to_save=["classifier"])
    return get_peft_model(model, config)


def finetune_model(method: str, params: dict, trainable: dict, n_heads: int = 12, eps: float = BERT_EPS,
                   lora_alpha: float = 16.0, dtype=torch.float64):
    """EncoderClassifier for `method` holding params and trainable (NumPy dicts), eval mode, in dtype."""
    from transformers import BertForSequenceClassification, BertModel

    from torch_ref.finetune.models import EncoderClassifier, ModelSpec

    check_finetune(method, params, trainable)
    p = {**params, **trainable}
    n_classes = p["classifier.w"].shape[0]
    config = _config(p, n_heads, eps, n_classes)
    encoder = params_to_hf(p)
    L = p["prefix"].shape[0] if method == "prefix" else 128
    spec = ModelSpec(method=method, n_classes=n_classes, prefix_length=L, lora_alpha=lora_alpha, lora_dropout=0.0)
    with torch.random.fork_rng(devices=[]):  # EncoderClassifier draws its new prefix / head
        if method in ("full", "lora"):
            inner = BertForSequenceClassification(config).to(dtype)
            _load(inner, {**{"bert." + k: v for k, v in encoder.items()},
                          "bert.pooler.dense.weight": p["pooler.w"], "bert.pooler.dense.bias": p["pooler.b"],
                          "classifier.weight": p["classifier.w"], "classifier.bias": p["classifier.b"]}, dtype)
            if method == "lora":
                inner = _lora(inner, trainable, lora_alpha)
        else:
            inner = BertModel(config, add_pooling_layer=False).to(dtype)
            _load(inner, encoder, dtype)
        model = EncoderClassifier(spec, inner).to(dtype)
    _set(model, trainable, dtype)
    return model.eval()


def _our_key(name: str, inverse: dict) -> str | None:
    """A trainable parameter's name in the torch model -> our key (None: not one of ours)."""
    for lead in ("inner.", "base_model.model.", "bert."):
        name = name.removeprefix(lead)
    name = name.replace(".modules_to_save.default", "").replace(".default", "")
    fixed = {"classifier.weight": "classifier.w", "classifier.bias": "classifier.b", "prefix": "prefix",
             "pooler.dense.weight": "pooler.w", "pooler.dense.bias": "pooler.b"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(lora_[AB])\.weight", name)
    if m:
        local = {v: k for k, v in LORA_TARGETS.items()}[m.group(2)]
        return f"layers.{m.group(1)}.{local}.{m.group(3)}"
    return inverse.get(name)


def _named_trainable(model) -> dict:
    inverse = {hf: ours for ours, hf in _key_map(model.config.num_hidden_layers).items()}
    out = {}
    for name, t in model.named_parameters():
        if t.requires_grad:
            key = _our_key(name, inverse)
            if key is None:
                raise ValueError(f"trainable parameter {name} has no key of ours")
            out[key] = t
    return out


def _set(model, trainable: dict, dtype) -> None:
    tensors = _named_trainable(model)
    if sorted(tensors) != sorted(trainable):
        raise ValueError(f"trainable: the torch model trains {sorted(set(tensors) ^ set(trainable))[:4]} differently")
    with torch.no_grad():
        for k, t in tensors.items():
            t.copy_(_tensor(trainable[k], dtype))


def trainable_of(model) -> dict:
    """{our key: the model's trainable tensor} (the tensors themselves, for an optimizer)."""
    return _named_trainable(model)


def grads_of(model) -> dict:
    """After loss.backward(): every trainable tensor's .grad under our keys, NumPy."""
    return {k: t.grad.detach().cpu().numpy().copy() for k, t in _named_trainable(model).items()}


def _batch(input_ids, attention_mask, token_type_ids):
    ids = torch.as_tensor(np.asarray(input_ids)).long()
    mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(np.asarray(attention_mask)).long()
    types = None if token_type_ids is None else torch.as_tensor(np.asarray(token_type_ids)).long()
    return ids, mask, types


def bert_finetune_logits(method: str, params: dict, trainable: dict, input_ids, attention_mask=None,
                         token_type_ids=None, n_heads: int = 12, eps: float = BERT_EPS, lora_alpha: float = 16.0,
                         dtype=torch.float64) -> torch.Tensor:
    """Shapes: (B, T) ids, mask, types -> logits (B, n_classes)"""
    model = finetune_model(method, params, trainable, n_heads, eps, lora_alpha, dtype)
    with torch.no_grad():
        return model(*_batch(input_ids, attention_mask, token_type_ids))


def bert_finetune_loss(method: str, params: dict, trainable: dict, input_ids, attention_mask, token_type_ids,
                       labels, n_heads: int = 12, eps: float = BERT_EPS, lora_alpha: float = 16.0,
                       dtype=torch.float64) -> float:
    """Mean cross-entropy (torch_ref/finetune/train.py's F.cross_entropy). Shapes: labels (B,) -> float"""
    logits = bert_finetune_logits(method, params, trainable, input_ids, attention_mask, token_type_ids, n_heads,
                                  eps, lora_alpha, dtype)
    return float(F.cross_entropy(logits, torch.as_tensor(np.asarray(labels)).long()))


def bert_finetune_loss_and_grads(method: str, params: dict, trainable: dict, input_ids, attention_mask,
                                 token_type_ids, labels, n_heads: int = 12, eps: float = BERT_EPS,
                                 lora_alpha: float = 16.0, with_logits: bool = False, dtype=torch.float64) -> tuple:
    """The loss and autograd's gradient of every trainable tensor, under trainable's keys (NumPy);
    with_logits also returns the logits (NumPy)."""
    model = finetune_model(method, params, trainable, n_heads, eps, lora_alpha, dtype)
    logits = model(*_batch(input_ids, attention_mask, token_type_ids))
    loss = F.cross_entropy(logits, torch.as_tensor(np.asarray(labels)).long())
    loss.backward()
    out = (float(loss.detach()), grads_of(model))
    return out + (logits.detach().numpy(),) if with_logits else out
