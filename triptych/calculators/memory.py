"""Memory formulas: attention score matrices and optimizer state, with bytes, GB and GiB.

    attention scores  one layer, all heads, one sequence: h * T_q * T_k * bytes_per_score
                      (the QK^T matrices a naive implementation materialises; flash attention never
                      holds them whole, which is the point of it)
    optimizer state   n_states * bytes_per_state per trainable parameter; frozen parameters have none.
                      Adam/AdamW keep 2 states (exp_avg, exp_avg_sq), SGD with momentum 1, plain SGD 0.
                      (torch also keeps one scalar `step` per parameter tensor, not per parameter.)
    KV cache          decoding keeps every past token's keys and values, per layer: 2 (K and V) * L *
                      h_kv * d_head * bytes per token, times T tokens and B sequences. Grouped-query
                      attention shrinks it by h / h_kv (Llama 3 8B: 4x), which is why it exists.
"""
from __future__ import annotations

from triptych.calculators.architecture import Architecture, check_size
from triptych.calculators.quantity import Quantity, fmt_int
from triptych.common.checks import InputError

OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd-momentum": 1, "sgd": 0}


def attention_scores_bytes(n_heads: int, context: int, bytes_per_score: int = 2, context_k: int | None = None,
                           batch: int = 1, key: str = "attention_scores_bytes") -> Quantity:
    check_size("n_heads", n_heads)
    check_size("context", context)
    check_size("bytes_per_score", bytes_per_score)
    check_size("batch", batch)
    t_k = context if context_k is None else context_k
    check_size("context_k", t_k)
    n = batch * n_heads * context * t_k * bytes_per_score
    b_txt = f"{batch}*" if batch != 1 else ""
    f = (f"{'B * ' if batch != 1 else ''}h * T_q * T_k * bytes = {b_txt}{n_heads}*{fmt_int(context)}*{fmt_int(t_k)}"
         f"*{bytes_per_score} = {fmt_int(n)} bytes")
    what = "one sequence" if batch == 1 else f"{batch} sequences"
    return Quantity(key, f"attention scores QK^T, one layer, all heads, {what}", n, "bytes", f)


def optimizer_state_bytes(n_params: int, optimizer: str = "adam", bytes_per_state: int = 4,
                          key: str = "optimizer_state_bytes", what: str = "") -> Quantity:
    check_size("n_params", n_params, allow_zero=True)
    check_size("bytes_per_state", bytes_per_state)
    if optimizer not in OPTIMIZER_STATES:
        raise InputError(f"optimizer: expected one of {', '.join(OPTIMIZER_STATES)}, got {optimizer!r}")
    k = OPTIMIZER_STATES[optimizer]
    n = k * bytes_per_state * n_params
    f = f"states * bytes * params = {k}*{bytes_per_state}*{fmt_int(n_params)} = {fmt_int(n)} bytes"
    label = f"{optimizer} state" + (f" for {what}" if what else "")
    return Quantity(key, label, n, "bytes", f)


def ratio(a: Quantity, b: Quantity, key: str, label: str) -> Quantity:
    if b.value == 0:
        raise InputError(f"{b.key}: expected a non-zero denominator for {key}, got 0")
    r = a.value / b.value
    return Quantity(key, label, r, "ratio", f"{fmt_int(a.value)} / {fmt_int(b.value)} = {r:.6g}")


def kv_cache_bytes(a: Architecture, context: int, batch: int = 1, bytes_per_value: int = 2) -> list[Quantity]:
    """Bytes of the KV cache per token and for `batch` sequences of `context` tokens (HF's cache:
    per layer a key and a value tensor (B, h_kv, T, d_head))."""
    check_size("context", context)
    check_size("batch", batch)
    check_size("bytes_per_value", bytes_per_value)
    L, h_kv, dh = a.n_layers, a.kv_heads, a.d_head
    per_token = 2 * L * h_kv * dh * bytes_per_value
    total = batch * context * per_token
    what = f"{fmt_int(context)} tokens x {batch} sequence{'s' if batch != 1 else ''}"
    return [
        Quantity("kv_cache_bytes_per_token", "KV cache per token (all layers)", per_token, "bytes",
                 f"2 (K, V) * L * h_kv * d_head * bytes = 2*{L}*{h_kv}*{dh}*{bytes_per_value} "
                 f"= {fmt_int(per_token)} bytes"),
        Quantity("kv_cache_bytes", f"KV cache, {what}", total, "bytes",
                 f"B * T * per token = {batch}*{fmt_int(context)}*{fmt_int(per_token)} = {fmt_int(total)} bytes"),
    ]
