"""LoRA's argument checks, written once and called by numpy_impl/lora.py, jax_impl/lora.py and
torch_ref/lora.py, so a bad call reads the same in all three backends."""
from __future__ import annotations

import math

from triptych.common.checks import InputError, check_float, check_min_ndim, check_positive_int, check_shape
from triptych.common.params import MHA_KEYS

# init_lora_params' `init`: peft's LoraConfig init_lora_weights choices (True = "default").
INITS = ("default", "gaussian", "random")
# The projections of multi-head attention that can carry a LoRA branch.
TARGETS = ("q", "k", "v", "o")

def check_rank(r, d_in: int, d_out: int) -> None:
    check_positive_int("r", r)
    if r > min(d_in, d_out):
        raise InputError(f"r: expected a rank <= min(d_in, d_out) = {min(d_in, d_out)} for a "
                         f"({d_out}, {d_in}) weight, got {r}")


def check_alpha(alpha) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise InputError(f"alpha: expected a positive finite number, got {alpha!r}")


def check_lora(lora: dict, d_in: int | None = None, d_out: int | None = None, name: str = "lora") -> int:
    """lora holds lora_A (r, d_in) and lora_B (d_out, r) (None: any size); returns r."""
    if not isinstance(lora, dict) or "lora_A" not in lora or "lora_B" not in lora:
        got = sorted(lora) if isinstance(lora, dict) else type(lora).__name__
        raise InputError(f"{name}: expected a dict with keys 'lora_A' (r, d_in) and 'lora_B' (d_out, r), got {got}")
    a, b = lora["lora_A"], lora["lora_B"]
    check_shape(f"{name}['lora_A']", a, (None, d_in))
    r = int(a.shape[0])
    check_shape(f"{name}['lora_B']", b, (d_out, r))
    check_rank(r, int(a.shape[1]), int(b.shape[0]))
    return r


def check_linear_args(x, w, b, lora) -> int:
    check_min_ndim("x", x, 1, "(..., d_in)")
    check_float("x", x)
    check_min_ndim("w", w, 2, "(d_out, d_in)")
    check_shape("w", w, (None, x.shape[-1]))
    d_out, d_in = int(w.shape[0]), int(w.shape[1])
    if b is not None:
        check_shape("b", b, (d_out,))
    return check_lora(lora, d_in, d_out)


def check_dropout_p(p) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise InputError(f"p: expected a dropout probability in [0, 1), got {p!r}")


def check_init(init: str) -> None:
    if init not in INITS:
        raise InputError(f"init: expected one of {', '.join(INITS)}, got {init!r}")


def check_targets(targets) -> tuple[str, ...]:
    targets = tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if not targets or bad or len(set(targets)) != len(targets):
        raise InputError(f"targets: expected distinct names from {', '.join(TARGETS)}, got {list(targets)}")
    return targets


def check_mha_params(params: dict) -> None:
    missing = [k for k in MHA_KEYS if k not in params] if isinstance(params, dict) else list(MHA_KEYS)
    if missing:
        raise InputError(f"params: expected keys {list(MHA_KEYS)}, missing {missing}")
    c = params["w_q"].shape[0]
    for k in MHA_KEYS:
        check_shape(f"params['{k}']", params[k], (c, c) if k.startswith("w") else (c,))


def check_lora_mha(lora_params: dict, d_model: int) -> tuple[str, ...]:
    if not isinstance(lora_params, dict):
        raise InputError(f"lora_params: expected a dict target -> {{'lora_A', 'lora_B'}}, got {type(lora_params).__name__}")
    targets = check_targets(lora_params.keys())
    for t in targets:
        check_lora(lora_params[t], d_model, d_model, name=f"lora_params['{t}']")
    return targets
