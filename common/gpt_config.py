"""The tiny GPT's configuration and its ONE set of weights, shared by the three backends.

Weights are a flat dict of NumPy arrays whose keys follow nanoGPT's module names, so the same dict
runs in numpy_impl.gpt, jax_impl.gpt and torch_ref.gpt and converts 1:1 to a torch state_dict.
Linear weights are (d_out, d_in) and applied as x @ W.T + b. The LM head is tied to `wte.weight`.

    wte.weight                 (V, C)       token embedding (and, transposed, the output head)
    wpe.weight                 (block, C)   learned positions; absent for sinusoidal / rope
    h.{i}.ln_1.weight|bias     (C,)
    h.{i}.attn.w_q|w_k|w_v|w_o (C, C)       same keys as the multi-head attention params dict
    h.{i}.attn.b_q|b_k|b_v|b_o (C,)
    h.{i}.ln_2.weight|bias     (C,)
    h.{i}.mlp.w_fc (4C, C), h.{i}.mlp.b_fc (4C,), h.{i}.mlp.w_proj (C, 4C), h.{i}.mlp.b_proj (C,)
    ln_f.weight|bias           (C,)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from common.checks import InputError, check_heads, check_positive_int

POSITIONS = ("learned", "sinusoidal", "rope")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 84
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    positions: str = "learned"  # one of POSITIONS

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_positive_int(name, getattr(self, name))
        check_heads(self.n_embd, self.n_head)
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if self.positions not in POSITIONS:
            raise InputError(f"positions: expected one of {', '.join(POSITIONS)}, got {self.positions!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def init_gpt_params(config: GPTConfig, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm gains, and the two
    projections that write into the residual stream scaled by 1/sqrt(2 * n_layer) so the stream's
    variance does not grow with depth."""
    rng = np.random.default_rng(seed)
    C, V = config.n_embd, config.vocab_size
    resid_std = 0.02 / np.sqrt(2 * config.n_layer)

    def normal(shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(dtype)

    p: dict[str, np.ndarray] = {"wte.weight": normal((V, C))}
    if config.positions == "learned":
        p["wpe.weight"] = normal((config.block_size, C))
    for i in range(config.n_layer):
        h = f"h.{i}."
        p[h + "ln_1.weight"] = np.ones(C, dtype)
        p[h + "ln_1.bias"] = np.zeros(C, dtype)
        for name in ("q", "k", "v"):
            p[h + f"attn.w_{name}"] = normal((C, C))
            p[h + f"attn.b_{name}"] = np.zeros(C, dtype)
        p[h + "attn.w_o"] = normal((C, C), resid_std)
        p[h + "attn.b_o"] = np.zeros(C, dtype)
        p[h + "ln_2.weight"] = np.ones(C, dtype)
        p[h + "ln_2.bias"] = np.zeros(C, dtype)
        p[h + "mlp.w_fc"] = normal((4 * C, C))
        p[h + "mlp.b_fc"] = np.zeros(4 * C, dtype)
        p[h + "mlp.w_proj"] = normal((C, 4 * C), resid_std)
        p[h + "mlp.b_proj"] = np.zeros(C, dtype)
    p["ln_f.weight"] = np.ones(C, dtype)
    p["ln_f.bias"] = np.zeros(C, dtype)
    return p
