"""Guided lessons for the course exercises (docs/course.md sections B-G).

Each lesson is one module with two halves:

    compute() -> dict      every number of the lesson, computed here (NumPy first, JAX and torch
                           beside it); plain Python/NumPy values, so tests can check them
    render(result)         rich panels and tables for the terminal (triptych/lessons/_render.py helpers)
    to_json(result)        what `python cli.py lesson NAME --json` prints
    passed(result)         False when a number disagrees with its reference: the CLI exits 1

torch, JAX and transformers are imported inside compute(), so `lesson list` stays instant.

In a notebook, `lessons.run(NAME)` returns the lesson as one object (triptych/lessons/_notebook.py): Jupyter
and Colab show its panels as HTML with the plot inline, print() gives the text.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from triptych.common.checks import InputError

__all__ = ["LESSONS", "load_lesson", "run"]

# name -> (module, one-line description), in the order a course meets them.
LESSONS: dict[str, tuple[str, str]] = {
    "decomposed-attention": ("triptych.lessons.decomposed_attention",
                             "B: attention as one-line steps, each checked against torch; -inf masking vs zeroing after softmax"),
    "craft-queries": ("triptych.lessons.craft_queries",
                      "C: derive queries (linear solves on score gaps) that return v_0, V, means; error vs scale S"),
    "argmax-attention": ("triptych.lessons.argmax_attention",
                         "D: hard (argmax) attention, its zero gradient (torch autograd, jax.grad), softmax -> argmax"),
    "subspace": ("triptych.lessons.subspace",
                 "E: read v_a out of (v_a + v_b)/2 with a projector; orthonormal keys and an averaging query"),
    "tokenizers": ("triptych.lessons.tokenization",
                   "F: BPE step by step on Austen vs the tokenizers library; BERT pairs, MLM labels, mismatches"),
    "modern-block": ("triptych.lessons.modern_block",
                     "a Llama-style block step by step (RMSNorm, RoPE, GQA, SwiGLU) vs HF; the two RoPE layouts"),
    "mlm-toy": ("triptych.lessons.mlm_toy",
                "G.1: softmax and cross-entropy of the masked-LM toy, step by step, NumPy / JAX / torch"),
}


def load_lesson(name: str) -> ModuleType:
    """The lesson's module, or InputError listing the lesson names."""
    if name not in LESSONS:
        raise InputError(f"lesson: expected one of {', '.join(LESSONS)} (or 'list'), got {name!r}")
    return importlib.import_module(LESSONS[name][0])


def run(name: str, out=None):
    """Run lesson `name` and return a LessonView (triptych/lessons/_notebook.py): displayed in a notebook it
    shows the lesson's panels and its plot inline; `out` is a folder to also save the plot in."""
    from triptych.lessons._notebook import run as _run

    return _run(name, out)
