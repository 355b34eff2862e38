"""Trainable parameters of LoRA adapters: r * (d_in + d_out) per adapted (d_out, d_in) matrix.

A (r, d_in) and B (d_out, r) are all that train (peft's default bias="none"); the frozen weight
contributes nothing. Targets name per-layer matrices of calculators.architecture.Architecture:
q (d -> h d_head), k, v (d -> h_kv d_head), o (h d_head -> d), ffn_in (d -> d_ff), ffn_out (d_ff -> d),
and with a SwiGLU FFN ffn_gate (d -> d_ff; ffn_in is then the up projection, ffn_out the down one)."""
from __future__ import annotations

from triptych.calculators.architecture import Architecture, check_size
from triptych.calculators.quantity import Quantity, fmt_int
from triptych.common.checks import InputError


def lora_params_for_matrix(d_out: int, d_in: int, r: int) -> int:
    check_size("d_out", d_out)
    check_size("d_in", d_in)
    check_size("rank", r)
    if r > min(d_in, d_out):
        raise InputError(f"rank: expected a rank <= min(d_in, d_out) = {min(d_in, d_out)} for a "
                         f"({d_out}, {d_in}) matrix, got {r}")
    return r * (d_in + d_out)


def lora_params(a: Architecture, rank: int, targets=("q", "v"), key: str = "lora_params") -> Quantity:
    shapes = a.matrix_shapes()
    targets = tuple(targets)
    bad = [t for t in targets if t not in shapes]
    if not targets or bad or len(set(targets)) != len(targets):
        raise InputError(f"targets: expected distinct names from {', '.join(shapes)}, got {list(targets)}")
    per_layer = sum(lora_params_for_matrix(*shapes[t], rank) for t in targets)
    n = a.n_layers * per_layer
    terms = " + ".join(f"({shapes[t][1]} + {shapes[t][0]})" for t in targets)
    f = f"L * r * sum(d_in + d_out) = {a.n_layers}*{rank}*[{terms}] = {fmt_int(n)}"
    names = ", ".join(f"W_{t.upper()}" if len(t) == 1 else t for t in targets)
    return Quantity(key, f"LoRA rank {rank} on {names} of every layer (trainable)", n, "params", f)
