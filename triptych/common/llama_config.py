"""The Llama-style model's configuration and its ONE set of weights, shared by the three backends.

The fields are Hugging Face LlamaConfig's under this project's names (torch_ref.llama.hf_config
maps them), so a real checkpoint's config.json fills them: SmolLM2-135M is
LlamaConfig(vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_ff=1536,
rope_base=100000.0, norm_eps=1e-5, tie_embeddings=True).

Weights are a flat dict of NumPy arrays (the same keys run in numpy_impl.llama, jax_impl.llama and
torch_ref.llama). Linear weights are (d_out, d_in), applied as x @ W.T, no biases anywhere. H heads
of size D = head_dim, H_kv key/value heads (grouped-query attention when H_kv < H):

    embed.weight                      (V, C)        token embedding (and the head when tied)
    layers.{i}.attn_norm.weight       (C,)          RMSNorm before attention      (HF input_layernorm)
    layers.{i}.attn.w_q               (H*D, C)      the keys of kvcache.attention_stack's layers
    layers.{i}.attn.w_k, .w_v         (H_kv*D, C)
    layers.{i}.attn.w_o               (C, H*D)
    layers.{i}.mlp_norm.weight        (C,)          RMSNorm before the MLP (HF post_attention_layernorm)
    layers.{i}.mlp.w_gate, .w_up      (d_ff, C)     swiglu.swiglu_mlp's keys
    layers.{i}.mlp.w_down             (C, d_ff)
    norm.weight                       (C,)          the final RMSNorm
    lm_head.weight                    (V, C)        only when tie_embeddings is False

rope_layout says how w_q and w_k pair their channels for RoPE: "half" (Hugging Face) or
"interleaved" (Meta's original checkpoints, GGUF). The HF converters permute those rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from triptych.common.checks import InputError, check_choice, check_ndim, check_positive_int

ROPE_LAYOUTS = ("half", "interleaved")


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int = 100
    block_size: int = 128  # the longest context trained on (HF max_position_embeddings); RoPE has no table
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_ff: int = 172  # about 8/3 d_model, as Llama shrinks SwiGLU's three matrices to two matrices' budget
    head_dim: int | None = None  # None: d_model // n_heads (HF's default; Gemma sets it apart)
    rope_base: float = 10000.0
    rope_layout: str = "half"  # one of ROPE_LAYOUTS
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff"):
            check_positive_int(name, getattr(self, name))
        if self.head_dim is None and self.d_model % self.n_heads:
            raise InputError(f"n_heads: expected a divisor of d_model={self.d_model} (or set head_dim), got {self.n_heads}")
        d = self.d_head
        check_positive_int("head_dim", d)
        if d % 2:
            raise InputError(f"head_dim: expected an even head size (RoPE rotates channel pairs), got {d}")
        if self.n_heads % self.n_kv_heads:
            raise InputError(f"n_kv_heads: expected a divisor of n_heads={self.n_heads}, got {self.n_kv_heads}")
        check_choice("rope_layout", self.rope_layout, ROPE_LAYOUTS)
        for name in ("rope_base", "norm_eps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise InputError(f"{name}: expected a positive number, got {v!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise InputError(f"tie_embeddings: expected True or False, got {self.tie_embeddings!r}")

    @property
    def d_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LlamaConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def llama_param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the weight dict and its shape, in the order init_llama_params builds them."""
    C, V, F = config.d_model, config.vocab_size, config.d_ff
    q, kv = config.n_heads * config.d_head, config.n_kv_heads * config.d_head
    shapes = {"embed.weight": (V, C)}
    for i in range(config.n_layers):
        p = f"layers.{i}."
        shapes.update({p + "attn_norm.weight": (C,), p + "attn.w_q": (q, C), p + "attn.w_k": (kv, C),
                       p + "attn.w_v": (kv, C), p + "attn.w_o": (C, q), p + "mlp_norm.weight": (C,),
                       p + "mlp.w_gate": (F, C), p + "mlp.w_up": (F, C), p + "mlp.w_down": (C, F)})
    shapes["norm.weight"] = (C,)
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


# our key (after "layers.{i}.") -> Hugging Face LlamaForCausalLM's (after "model.layers.{i}.")
HF_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.w_q": "self_attn.q_proj.weight",
    "attn.w_k": "self_attn.k_proj.weight",
    "attn.w_v": "self_attn.v_proj.weight",
    "attn.w_o": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.w_gate": "mlp.gate_proj.weight",
    "mlp.w_up": "mlp.up_proj.weight",
    "mlp.w_down": "mlp.down_proj.weight",
}
HF_TOP_NAMES = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
                "lm_head.weight": "lm_head.weight"}


def hf_key(key: str) -> str:
    """Our weight key -> the Hugging Face state_dict key holding the same tensor (the renaming only:
    torch_ref.llama's converters also permute W_q, W_k rows for the interleaved layout).

    "layers.3.attn.w_q" -> "model.layers.3.self_attn.q_proj.weight"
    """
    if key in HF_TOP_NAMES:
        return HF_TOP_NAMES[key]
    parts = key.split(".", 2)  # layers.{i}.rest
    if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or parts[2] not in HF_LAYER_NAMES:
        raise InputError(f"key: expected a key of llama_param_shapes (e.g. 'layers.0.attn.w_q'), got {key!r}")
    return f"model.layers.{parts[1]}.{HF_LAYER_NAMES[parts[2]]}"


def check_llama_params(params: dict, config: LlamaConfig) -> None:
    """The keys and shapes of llama_param_shapes, no more and no fewer, named in the error."""
    from triptych.common.checks import check_shape

    want = llama_param_shapes(config)
    missing = [k for k in want if k not in params]
    extra = [k for k in params if k not in want]
    if missing or extra:
        raise InputError(f"params: expected the keys of llama_param_shapes(config); missing {missing[:4]}"
                         f"{' ...' if len(missing) > 4 else ''}, unexpected {extra[:4]}{' ...' if len(extra) > 4 else ''}")
    for k, shape in want.items():
        check_shape(f"params['{k}']", params[k], shape)


def init_llama_params(config: LlamaConfig, seed: int = 0, dtype=np.float32, std: float = 0.02,
                      norm_jitter: float = 0.0) -> dict[str, np.ndarray]:
    """HF's LlamaPreTrainedModel init: N(0, std = 0.02) for every matrix, RMSNorm weights 1. Parity
    tests raise std so the logits are far from uniform and every path carries signal. norm_jitter > 0
    draws the norm weights from 1 + N(0, norm_jitter) instead, so a parity test of their gradients
    is not run at the special point where every gain is one."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in llama_param_shapes(config).items():
        if k.endswith("norm.weight"):
            out[k] = (1.0 + norm_jitter * rng.standard_normal(shape)).astype(dtype)
        else:
            out[k] = (std * rng.standard_normal(shape)).astype(dtype)
    return out


def check_decode_inputs(idx, cache_shape: tuple, t_past, config: LlamaConfig) -> np.ndarray:
    """The checks of llama_decode.decode_forward, one function so that numpy_impl and jax_impl refuse
    the same inputs in the same words. Returns idx as a NumPy integer array.

    Shapes: idx (B, T_new) ints, cache_shape (n_layers, B, H_kv, T_max, D); t_past + T_new <= T_max
    """
    idx = np.asarray(idx)
    check_ndim("idx", idx, 2, "(B, T_new) token ids")
    if not np.issubdtype(idx.dtype, np.integer) or idx.shape[1] == 0:
        raise InputError(f"idx: expected integer token ids with T_new >= 1, got shape {idx.shape} dtype {idx.dtype}")
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= config.vocab_size:  # JAX would clamp an out-of-range index silently
        raise InputError(f"idx: expected token ids in [0, {config.vocab_size}), got values in [{lo}, {hi}]")
    want = (config.n_layers, idx.shape[0], config.n_kv_heads, None, config.d_head)
    shape = tuple(cache_shape)
    if len(shape) != 5 or any(w is not None and w != s for w, s in zip(want, shape)):
        raise InputError(f"cache: expected k, v of shape (n_layers, B, H_kv, T_max, D) = "
                         f"{want[:3] + ('T_max',) + want[4:]}, got {shape}")
    if isinstance(t_past, bool) or not isinstance(t_past, (int, np.integer)) or t_past < 0:
        raise InputError(f"t_past: expected a non-negative integer, got {t_past!r}")
    # Writing past T_max would clamp (JAX's dynamic_update_slice) or fail half-way: refuse first.
    if t_past + idx.shape[1] > shape[3]:
        raise InputError(f"idx: expected at most T_max={shape[3]} positions in the cache, got t_past={t_past} "
                         f"+ {idx.shape[1]} new = {t_past + idx.shape[1]}")
    return idx


# ---------------------------------------------------------------- one layer on its own

# One layer's weights without the `layers.{i}.` prefix (numpy_impl, jax_impl, torch_ref llama_block).
LAYER_ATTN_KEYS = ("w_q", "w_k", "w_v", "w_o")
LAYER_KEYS = ("attn_norm.weight",) + tuple(f"attn.{k}" for k in LAYER_ATTN_KEYS) + (
    "mlp_norm.weight", "mlp.w_gate", "mlp.w_up", "mlp.w_down")


def check_layer_inputs(x, params, keys) -> None:
    """The same refusals in the three llama_block modules: x (B, T, C) and every key present."""
    check_ndim("x", x, 3, "(B, T, C)")
    missing = [k for k in keys if not isinstance(params, dict) or k not in params]
    if missing:
        raise InputError(f"params: expected keys {list(keys)}, missing {missing}")
