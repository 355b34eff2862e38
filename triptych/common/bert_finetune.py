"""Fine-tuning a BERT encoder for classification: the names the three bert_finetune.py modules share
(numpy_impl/, jax_impl/, torch_ref/), and their one argument check.

The classifier is torch_ref/finetune/models.py's EncoderClassifier, method by method:

    full    every encoder weight + HF BertForSequenceClassification's head:
            logits = classifier(tanh(pooler(h_last[:, 0])))          ([CLS] -> pooler -> classifier)
    lora    the same model, frozen, with LoRA adapters W + (alpha/r) B A on `targets` (peft's default
            for BERT: query and value) and the classifier trainable (peft's modules_to_save)
    head    frozen encoder; logits = classifier(masked mean of h_last)   (the count clamped to >= 1)
    prefix  frozen encoder on [prefix (L, C); word[ids]] (+ positions 0..L+T-1, token type 0 on the
            prefix; every token may attend the prefix); logits = classifier(masked mean of the text)

Keys beyond the encoder's (common/bert_params.py): "pooler.w" (C, C), "pooler.b" (C,),
"classifier.w" (n, C), "classifier.b" (n,), "prefix" (L, C), and per adapter
"layers.{i}.<weight>.lora_A" (r, d_in), "layers.{i}.<weight>.lora_B" (d_out, r).
"""
from __future__ import annotations

from triptych.common.checks import InputError

__all__ = ["METHODS", "LORA_TARGETS", "DEFAULT_LORA_TARGETS", "HEAD_KEYS", "adapter_targets", "check_finetune"]

METHODS = ("full", "head", "prefix", "lora")
# Our weight key inside a layer -> the HF module path inside encoder.layer.{i} (what peft wraps).
LORA_TARGETS = {
    "attn.w_q": "attention.self.query", "attn.w_k": "attention.self.key", "attn.w_v": "attention.self.value",
    "attn.w_o": "attention.output.dense", "mlp.w_fc": "intermediate.dense", "mlp.w_proj": "output.dense",
}
DEFAULT_LORA_TARGETS = ("attn.w_q", "attn.w_v")  # torch_ref/finetune/models.py's LORA_TARGETS["bert"]
# The trainable head of each method (the encoder's own keys join them for full).
HEAD_KEYS = {
    "full": ("pooler.w", "pooler.b", "classifier.w", "classifier.b"),
    "lora": ("classifier.w", "classifier.b"),
    "head": ("classifier.w", "classifier.b"),
    "prefix": ("prefix", "classifier.w", "classifier.b"),
}


def adapter_targets(trainable: dict) -> dict[str, int]:
    """{"layers.{i}.<weight>": r} for every adapter in `trainable` (both halves required)."""
    out = {}
    for key in trainable:
        if key.endswith(".lora_A"):
            w_key = key[: -len(".lora_A")]
            if w_key + ".lora_B" not in trainable:
                raise InputError(f"trainable: expected {w_key}.lora_B beside {key}, got none")
            out[w_key] = int(trainable[key].shape[0])
    return out


def check_finetune(method: str, params: dict, trainable: dict) -> None:
    """method is one of METHODS; trainable holds its head's keys (and, for lora, at least one adapter
    on a known target of an existing layer; for full, every encoder weight); params holds the rest."""
    if method not in METHODS:
        raise InputError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    missing = [k for k in HEAD_KEYS[method] if k not in trainable]
    if method == "lora":
        missing += [k for k in ("pooler.w", "pooler.b") if k not in params]
    if missing:
        raise InputError(f"trainable: expected the {method} method's keys {missing} (see triptych/common/bert_finetune.py)")
    if method == "full" and "embed.word" not in trainable:
        raise InputError("trainable: method full trains every encoder weight; expected embed.word and the rest in it")
    if method == "lora":
        targets = adapter_targets(trainable)
        if not targets:
            raise InputError("trainable: method lora expected at least one layers.{i}.<weight>.lora_A / lora_B pair")
        for w_key in targets:
            local = w_key.split(".", 2)[-1]
            if local not in LORA_TARGETS or w_key not in params:
                raise InputError(f"trainable: expected adapters on {', '.join(LORA_TARGETS)} of existing layers, "
                                 f"got {w_key}")
