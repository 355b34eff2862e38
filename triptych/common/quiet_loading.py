"""One status line of our own instead of third-party progress bars while a Hugging Face model loads.

transformers draws "Loading weights" (from_pretrained) and "Converting and de-quantizing GGUF
tensors..." (a GGUF load) with tqdm on stderr. Redrawn with carriage returns, those bars land in
the middle of streamed text, in CI logs as hundreds of lines, and after `--json` output. The
loaders (pretrained.smollm2.hf_model, pretrained.minilm.hf_model, generation.engines' torch
engine) load inside `loading(what)`: the bars are off, and one plain line on stderr says what is
being loaded (stdout, where results and JSON go, is untouched).
"""
from __future__ import annotations

import contextlib
import functools

__all__ = ["loading", "silence_progress_bars"]


def silence_progress_bars() -> None:
    """Switch off transformers' and huggingface_hub's progress bars, and the tqdm that transformers'
    GGUF conversion calls directly (it does not ask transformers' switch)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging

    logging.disable_progress_bar()
    disable_progress_bars()
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # a transformers without GGUF support has no such bar either
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None and not isinstance(bar, functools.partial):
        gguf_utils.tqdm = functools.partial(bar, disable=True)


@contextlib.contextmanager
def loading(what: str):
    """Silence the bars, then print `loading WHAT ...` as one line on stderr for the duration.

    A plain line, never redrawn or erased, so it cannot overwrite text already on the screen. While
    a progress bar of ours is live (bench decode builds its engines under one), the line goes
    through that bar's console, which prints it above the bar; a line written to stderr beside a
    live display would leave a stale copy of the bar on the screen."""
    from triptych.common.console import console, err_console

    silence_progress_bars()
    target = console if getattr(console, "_live_stack", None) else err_console
    target.print(f"loading {what} ...", highlight=False, markup=False, soft_wrap=True)
    yield
