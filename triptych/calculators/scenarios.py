"""The worked accounting questions of the course's section G (docs/course.md), computed by the formulas
of this package (never looked up). Each returns (architecture or None, list of Quantity)."""
from __future__ import annotations

from dataclasses import replace

from triptych.calculators.architecture import Architecture, count_parameters
from triptych.calculators.loss import target_probability_and_loss
from triptych.calculators.lora import lora_params
from triptych.calculators.memory import attention_scores_bytes, optimizer_state_bytes, ratio
from triptych.calculators.quantity import Quantity, fmt_int

# G.2: a GPT-style decoder (the "aether" model). The exercise gives no vocabulary, so embeddings,
# head and total are not part of it.
AETHER = Architecture(n_layers=48, d_model=6144, n_heads=48, context=16_384, ffn_mult=4, bias=True,
                      kind="decoder", name="aether")
AETHER_LORA_RANK, AETHER_LORA_TARGETS = 8, ("q", "v")
AETHER_BYTES_PER_SCORE = 2       # fp16/bf16 scores
AETHER_ADAM_BYTES_PER_STATE = 4  # 2 fp32 states = 8 bytes per trainable parameter

# G.3: a small RoBERTa-style encoder. FFN inner size = d_model (W1, W2 are d x d, as the course's
# formula assumes); 256 + 2 learned positions (RoBERTa offsets positions past the padding index);
# biases on every projection; two LayerNorms per layer plus one on the embeddings; no token-type
# table, no pooler, no output head.
ENCODER_COURSE = Architecture(n_layers=4, d_model=512, n_heads=8, context=256, vocab_size=32_000, d_ff=512,
                              positions="learned", n_positions=258, bias=True, kind="encoder", name="encoder-course")

# G.1: a masked-LM toy.
MLM_TOY_LABELS = ("cat", "dog", "mat", "ran", "sat")
MLM_TOY_LOGITS = (0.5, 0.1, 3.0, 0.2, 1.0)
MLM_TOY_TARGET = 2  # "mat"


def aether() -> tuple[Architecture, list[Quantity]]:
    a = AETHER
    params = {q.key: q for q in count_parameters(a)}
    ffn = params["ffn_params"]
    lora = lora_params(a, AETHER_LORA_RANK, AETHER_LORA_TARGETS)
    lora_adam = optimizer_state_bytes(lora.value, "adam", AETHER_ADAM_BYTES_PER_STATE, key="lora_adam_bytes",
                                      what="the LoRA parameters")
    ffn_adam = optimizer_state_bytes(ffn.value, "adam", AETHER_ADAM_BYTES_PER_STATE, key="ffn_adam_bytes",
                                     what="the FFN parameters")
    return a, [
        attention_scores_bytes(a.n_heads, a.context, AETHER_BYTES_PER_SCORE),
        params["ffn_params_per_layer"],
        ffn,
        lora,
        lora_adam,
        ffn_adam,
        ratio(lora_adam, ffn_adam, "lora_to_ffn_adam_ratio", "LoRA Adam state / FFN Adam state"),
    ]


def encoder_course(instantiate: bool = True) -> tuple[Architecture, list[Quantity]]:
    """Formula count, and (instantiate=True) the count of the same model built in torch."""
    a = ENCODER_COURSE
    quantities = count_parameters(a)
    total = next(q for q in quantities if q.key == "total_params")
    quantities.append(Quantity("params_formula", "trainable parameters by formula", total.value, "params", total.formula))
    if instantiate:
        from triptych.calculators.torch_models import build_torch_encoder, count_trainable

        model = build_torch_encoder(a)
        n = count_trainable(model)
        quantities.append(Quantity(
            "params_torch", "trainable parameters of the instantiated torch model", n, "params",
            f"sum(p.numel()) over nn.Embedding({fmt_int(a.vocab_size)}, {a.d_model}), nn.Embedding({a.positions_rows}, "
            f"{a.d_model}), nn.LayerNorm({a.d_model}), {a.n_layers} x nn.TransformerEncoderLayer({a.d_model}, "
            f"{a.n_heads}, dim_feedforward={a.ffn_inner}) = {fmt_int(n)}"))
        # The same encoder as transformers' RobertaModel (no pooler): RoBERTa always carries a
        # token-type table with one row, so its formula adds exactly d parameters.
        from triptych.calculators.torch_models import build_roberta

        roberta = replace(a, token_types=1)
        q = next(q for q in count_parameters(roberta) if q.key == "total_params")
        quantities.append(Quantity("params_roberta_formula", "formula with RoBERTa's 1-row token-type table", q.value,
                                   "params", q.formula))
        n = count_trainable(build_roberta(roberta))
        quantities.append(Quantity("params_roberta_torch", "transformers RobertaModel(add_pooling_layer=False)", n,
                                   "params", f"sum(p.numel()) over RobertaModel's parameters = {fmt_int(n)}"))
    return a, quantities


def mlm_toy() -> tuple[None, list[Quantity]]:
    return None, target_probability_and_loss(MLM_TOY_LOGITS, MLM_TOY_TARGET, MLM_TOY_LABELS)
