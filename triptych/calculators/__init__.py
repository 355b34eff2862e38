"""Backend-neutral calculators: parameter counts, memory, LoRA sizes and losses, each returned as a
Quantity with its unit and a one-line formula with the numbers substituted.

    from triptych.calculators import Architecture, count_parameters, lora_params, attention_scores_bytes
    a = Architecture(n_layers=12, d_model=768, n_heads=12, context=1024, vocab_size=50257)
    for q in count_parameters(a): print(q.line())

`python cli.py calc ...` prints the same quantities; tests/test_calc*.py checks every formula
against real torch models (counts exactly, memory against tensor nbytes)."""
from triptych.calculators.architecture import Architecture, attention_params_per_layer, count_parameters, ffn_params_per_layer
from triptych.calculators.lora import lora_params, lora_params_for_matrix
from triptych.calculators.loss import target_probability_and_loss
from triptych.calculators.memory import OPTIMIZER_STATES, attention_scores_bytes, kv_cache_bytes, optimizer_state_bytes, ratio
from triptych.calculators.quantity import GB, GiB, Quantity, as_dict, fmt_bytes

__all__ = [
    "Architecture", "count_parameters", "attention_params_per_layer", "ffn_params_per_layer",
    "lora_params", "lora_params_for_matrix", "target_probability_and_loss",
    "OPTIMIZER_STATES", "attention_scores_bytes", "kv_cache_bytes", "optimizer_state_bytes", "ratio",
    "GB", "GiB", "Quantity", "as_dict", "fmt_bytes",
]
