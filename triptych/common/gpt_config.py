"""The tiny GPT's configuration and its ONE set of weights, shared by the three backends.

Weights are a flat dict of NumPy arrays whose keys follow nanoGPT's module names, so the same dict
runs in numpy_impl.gpt, jax_impl.gpt and torch_ref.gpt and converts 1:1 to a torch state_dict.
Linear weights are (d_out, d_in) and applied as x @ W.T + b. The LM head is tied to `wte.weight`.

    wte.weight                 (V, C)       token embedding (and, transposed, the output head)
    wpe.weight                 (block, C)   learned positions; absent for sinusoidal / rope / alibi / none
    h.{i}.ln_1.weight|bias     (C,)
    h.{i}.attn.w_q|w_k|w_v|w_o (C, C)       same keys as the multi-head attention params dict
    h.{i}.attn.b_q|b_k|b_v|b_o (C,)
    h.{i}.ln_2.weight|bias     (C,)
    h.{i}.mlp.w_fc (4C, C), h.{i}.mlp.b_fc (4C,), h.{i}.mlp.w_proj (C, 4C), h.{i}.mlp.b_proj (C,)
    ln_f.weight|bias           (C,)

Positions: "learned" (a wpe table, block_size rows), "sinusoidal" (the fixed table added to the token
embeddings), "rope" (queries and keys rotated), "alibi" (Press et al. 2022: a constant per-head penalty
-m_h * distance added to the attention scores, masks.alibi_bias) or "none" (no position signal at all:
a causal decoder can still infer position from the mask, e.g. by counting how many keys it averages).
Only learned positions are bounded by block_size; the others run on any length.

scale_embeddings (default False) multiplies the token embeddings by sqrt(n_embd) before the positions
are added, as Vaswani et al. 2017 (section 3.4) do: with GPT-2's N(0, 0.02) init a token row has norm
~0.02 sqrt(C) while a sinusoidal row has norm sqrt(C / 2), so without it the fixed table drowns the
tokens. The tied output head reads the unscaled wte.

The course's attention experiments (docs/course.md, section I) are further fields; their defaults are
the standard model above, so a config that does not mention them builds exactly those weights:

    similarity         "dot" (q.k / sqrt(D)) | "neg_sq_dist" (-|q - k|^2 / sqrt(D))
                       | "cosine" (exp(log_temp) * cos(q, k)): adds h.{i}.attn.log_temp (n_head,),
                       initialised to log(sqrt(D)) so the scores start with the spread of dot products
    share_qkv          "none" | "qk" (K uses Q's projection) | "kv" (V uses K's) | "qkv" (one for all):
                       the projections nobody reads are absent (qk: no w_k/b_k; kv: no w_v/b_v;
                       qkv: only w_q/b_q)
    post_softmax_mask  False | True: softmax over ALL keys, then zero the future (the wrong way; the
                       future leaks through the normaliser)
    qkv_mlp            False | True: q, k, v each from a small MLP C -> 2C -> GELU -> C instead of a
                       linear map: h.{i}.attn.mlp_{q,k,v}.w_fc (2C, C), .b_fc (2C,), .w_proj (C, 2C),
                       .b_proj (C,) replace w_q/b_q, w_k/b_k, w_v/b_v (sharing applies to the MLPs)
    attention          "softmax" | "aft_simple": Attention Free Transformer (causal AFT-simple) with the
                       same q, k, v, output projections and no heads
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from triptych.common.checks import InputError, check_heads, check_ndim, check_positive_int, dtype_str

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "none")
SIMILARITIES = ("dot", "neg_sq_dist", "cosine")
SHARES = ("none", "qk", "kv", "qkv")
ATTENTIONS = ("softmax", "aft_simple")
# The straight GPT's attention: the value of each experiment field that asks for none (the fields'
# defaults). positions="rope" / "alibi" change the attention too; learned, sinusoidal and none act on
# the embeddings only.
STRAIGHT_ATTENTION = {"similarity": "dot", "share_qkv": "none", "post_softmax_mask": False, "qkv_mlp": False,
                      "attention": "softmax"}


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 84
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    positions: str = "learned"  # one of POSITIONS
    scale_embeddings: bool = False  # token embeddings * sqrt(n_embd) (module docstring)
    # the attention experiments (module docstring); the defaults are standard attention
    similarity: str = "dot"  # one of SIMILARITIES
    share_qkv: str = "none"  # one of SHARES
    post_softmax_mask: bool = False
    qkv_mlp: bool = False
    attention: str = "softmax"  # one of ATTENTIONS

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            check_positive_int(name, getattr(self, name))
        check_heads(self.n_embd, self.n_head)
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")
        if self.positions not in POSITIONS:
            raise InputError(f"positions: expected one of {', '.join(POSITIONS)}, got {self.positions!r}")
        for name, allowed in (("similarity", SIMILARITIES), ("share_qkv", SHARES), ("attention", ATTENTIONS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name}: expected one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.positions == "alibi" and self.attention == "aft_simple":
            # ALiBi biases attention scores; AFT-simple has none, so the positions would silently vanish
            raise InputError("positions: 'alibi' biases attention scores, which attention='aft_simple' does not have")
        for name in ("post_softmax_mask", "qkv_mlp", "scale_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name}: expected True or False, got {getattr(self, name)!r}")

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
        for name in qkv_projections(config):
            if config.qkv_mlp:
                p[h + f"attn.mlp_{name}.w_fc"] = normal((2 * C, C))
                p[h + f"attn.mlp_{name}.b_fc"] = np.zeros(2 * C, dtype)
                p[h + f"attn.mlp_{name}.w_proj"] = normal((C, 2 * C))
                p[h + f"attn.mlp_{name}.b_proj"] = np.zeros(C, dtype)
            else:
                p[h + f"attn.w_{name}"] = normal((C, C))
                p[h + f"attn.b_{name}"] = np.zeros(C, dtype)
        if config.similarity == "cosine":
            p[h + "attn.log_temp"] = np.full(config.n_head, 0.5 * np.log(C // config.n_head), dtype)
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


def qkv_sources(config: GPTConfig) -> dict[str, str]:
    """Which projection produces each of q, k and v: {"q": "q", "k": "q", "v": "v"} for share_qkv="qk"."""
    share = getattr(config, "share_qkv", "none")
    return {"q": "q", "k": "q" if share in ("qk", "qkv") else "k", "v": {"kv": "k", "qkv": "q"}.get(share, "v")}


def qkv_projections(config: GPTConfig) -> tuple[str, ...]:
    """The projections a config owns weights for, in q, k, v order ("q", "v" for share_qkv="qk")."""
    used = set(qkv_sources(config).values())
    return tuple(n for n in "qkv" if n in used)


def straight_attention(config: GPTConfig) -> bool:
    """Whether config's attention is the straight GPT's (multi-head softmax(q k^T / sqrt(D)) v, no
    experiment), so the three gpt.py modules run their plain block; otherwise gpt_variants' attention."""
    return config.positions not in ("rope", "alibi") and all(
        getattr(config, name) == value for name, value in STRAIGHT_ATTENTION.items())


def straight_embeddings(config: GPTConfig) -> bool:
    """Whether the embeddings are the straight GPT's: wte[idx] + wpe[:T], unscaled."""
    return config.positions == "learned" and not config.scale_embeddings


def check_idx(name: str, idx, config: GPTConfig) -> None:
    """The GPT's token ids, refused in the same words by numpy_impl.gpt, jax_impl.gpt and torch_ref.gpt:
    a (B, T) integer array with T >= 1, and T <= block_size with learned positions. `idx` is the
    backend's own array (read through .shape and .dtype only, so a GPU tensor stays where it is)."""
    check_ndim(name, idx, 2, "(B, T) token ids")
    try:
        integer = np.issubdtype(np.dtype(dtype_str(idx)), np.integer)
    except TypeError:  # a dtype NumPy does not know (bfloat16) is no integer dtype
        integer = False
    if not integer:
        raise InputError(f"{name}: expected integer token ids, got dtype {dtype_str(idx)}")
    if idx.shape[1] == 0:
        raise InputError(f"{name}: expected at least one position, got shape {tuple(int(n) for n in idx.shape)}")
    if config.positions == "learned" and idx.shape[1] > config.block_size:
        raise InputError(
            f"{name}: expected at most block_size={config.block_size} positions with learned positions "
            f"(the table has no rows beyond), got {idx.shape[1]}"
        )
