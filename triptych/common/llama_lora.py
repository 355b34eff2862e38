"""LoRA on the Llama decoder's projections: the names, the adapter layout and the checks, written once
and used by numpy_impl/llama_lora.py, jax_impl/llama_lora.py and torch_ref/llama_lora.py.

Adapters are one flat dict, so optimisers (numpy_impl.optim, jax_impl.optim) treat them like any
weight dict: for layer i and target t (weight key W = TARGET_KEYS[t])
    f"layers.{i}.{W}.lora_A"  (r, d_in)     f"layers.{i}.{W}.lora_B"  (d_out, r)
the same shapes and roles as peft's lora_A / lora_B on Hugging Face's module of that name
(HF_MODULES), e.g. layers.0.attn.w_q.lora_A <-> model.layers.0.self_attn.q_proj.lora_A.default.weight.
"""
from __future__ import annotations

import numpy as np

from triptych.common.checks import InputError, check_shape
from triptych.common.lora_checks import check_alpha, check_rank

__all__ = ["TARGET_KEYS", "HF_MODULES", "DEFAULT_TARGETS", "IGNORE_INDEX", "check_llama_lora_targets",
           "adapter_key", "check_llama_lora", "lora_targets_of", "causal_lm_pairs"]

# The seven linear layers of a Llama layer that LoRA can adapt, by peft's usual short names.
TARGET_KEYS = {"q": "attn.w_q", "k": "attn.w_k", "v": "attn.w_v", "o": "attn.w_o",
               "gate": "mlp.w_gate", "up": "mlp.w_up", "down": "mlp.w_down"}
HF_MODULES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
              "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}
# The LoRA paper (Hu et al., 2021) adapts the query and value projections; peft's default for Llama too.
DEFAULT_TARGETS = ("q", "v")
IGNORE_INDEX = -100  # a target that the cross-entropy skips (torch's and HF's convention)


def check_llama_lora_targets(targets) -> tuple[str, ...]:
    """A comma-separated string or a sequence of distinct names from TARGET_KEYS -> a tuple."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    targets = tuple(targets)
    bad = [t for t in targets if t not in TARGET_KEYS]
    if not targets or bad or len(set(targets)) != len(targets):
        raise InputError(f"targets: expected distinct names from {', '.join(TARGET_KEYS)}, got {list(targets)}")
    return targets


def adapter_key(layer: int, target: str, part: str) -> str:
    """adapter_key(0, "q", "lora_A") -> "layers.0.attn.w_q.lora_A"."""
    return f"layers.{layer}.{TARGET_KEYS[target]}.{part}"


def lora_targets_of(adapters: dict) -> tuple[str, ...]:
    """The targets an adapter dict carries, in TARGET_KEYS' order."""
    found = {k.rsplit(".", 1)[0].split(".", 2)[2] for k in adapters}
    return tuple(t for t, w in TARGET_KEYS.items() if w in found)


def check_llama_lora(params: dict, adapters: dict, n_layers: int, alpha) -> dict[str, int]:
    """Every adapter pairs with a weight of params: lora_A (r, d_in), lora_B (d_out, r), each target
    in every layer, no stray keys. Returns {weight key: r}."""
    check_alpha(alpha)
    if not isinstance(adapters, dict) or not adapters:
        raise InputError(f"adapters: expected a non-empty dict 'layers.{{i}}.<weight>.lora_A|lora_B' -> array, "
                         f"got {type(adapters).__name__ if not isinstance(adapters, dict) else 'an empty dict'}")
    targets = lora_targets_of(adapters)
    expected = {adapter_key(i, t, p) for i in range(n_layers) for t in targets for p in ("lora_A", "lora_B")}
    if set(adapters) != expected:
        wrong = sorted(set(adapters) ^ expected)[:4]
        raise InputError(f"adapters: expected lora_A and lora_B for targets {list(targets)} in each of "
                         f"{n_layers} layers, got a different set of keys (e.g. {wrong})")
    ranks = {}
    for i in range(n_layers):
        for t in targets:
            w_key = f"layers.{i}.{TARGET_KEYS[t]}"
            d_out, d_in = (int(s) for s in params[w_key].shape)
            a, b = adapters[w_key + ".lora_A"], adapters[w_key + ".lora_B"]
            check_shape(f"adapters['{w_key}.lora_A']", a, (None, d_in))
            check_shape(f"adapters['{w_key}.lora_B']", b, (d_out, int(a.shape[0])))
            check_rank(int(a.shape[0]), d_in, d_out)
            ranks[w_key] = int(a.shape[0])
    return ranks


def init_adapters(params: dict, config, r: int, targets, init: str, seed: int, dtype, init_lora_params) -> dict:
    """Adapters for `targets` in every layer, each drawn by the backend's own init_lora_params(d_in,
    d_out, r, init, seed, dtype) with a seed per (layer, target), so NumPy and JAX draw the same
    layout. Checks come first: the model's weights, the targets, the init name.

    Shapes: -> {"layers.{i}.<weight>.lora_A": (r, d_in), "....lora_B": (d_out, r)}
    """
    from triptych.common.llama_config import check_llama_params
    from triptych.common.lora_checks import check_init

    check_llama_params(params, config)
    targets = check_llama_lora_targets(targets)
    check_init(init)
    dtype = params["embed.weight"].dtype if dtype is None else dtype
    adapters = {}
    for i in range(config.n_layers):
        for j, t in enumerate(targets):
            d_out, d_in = params[f"layers.{i}.{TARGET_KEYS[t]}"].shape
            lora = init_lora_params(int(d_in), int(d_out), r, init, seed + i * len(TARGET_KEYS) + j, dtype)
            adapters[adapter_key(i, t, "lora_A")], adapters[adapter_key(i, t, "lora_B")] = lora["lora_A"], lora["lora_B"]
    return adapters


def causal_lm_pairs(ids, pad_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Next-token pairs from token rows: inputs ids[:, :-1], targets ids[:, 1:], a target that is
    padding set to IGNORE_INDEX so the mean loss is over real next tokens only.

    Shapes: ids (B, T + 1) ints -> idx (B, T), targets (B, T)
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.shape[1] < 2 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"ids: expected (B, T + 1) integer token ids with T + 1 >= 2, got shape {ids.shape} "
                         f"dtype {ids.dtype}")
    idx, targets = ids[:, :-1].copy(), ids[:, 1:].astype(np.int64)
    if pad_id is not None:
        targets[targets == pad_id] = IGNORE_INDEX
    return idx, targets
