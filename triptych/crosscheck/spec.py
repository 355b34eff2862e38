"""What an exercise is: the contract a user's code is graded against, and the mistakes it can name.

An Exercise says how to call the user's code (`target`, sent to the sandboxed child), how to make the
inputs of each Case, how the three backends compute the right answer (`reference`, run by
crosscheck.cases.run_on_backends exactly as `parity` runs its rows), and a list of Variants: wrong
answers computed by the project on the same inputs, so a failing output can be matched to the
mistake that produces it ("your output matches attention WITHOUT the 1/sqrt(d) scale").
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Forms(tuple):
    """What a Variant's compute returns when one mistake has several forms (no bias correction with
    torch's decay order and with the CS336 handout's): a tuple of answers, each one array or a tuple
    of arrays; the variant matches when any of them does."""


@dataclass(frozen=True)
class Variant:
    """A named wrong answer. compute(inputs) takes the case's NumPy inputs and returns what the
    mistaken code returns (one array or a tuple, or Forms of several such), computed here, never
    stored."""
    name: str
    says: str  # completes "your output matches ...": "attention WITHOUT the 1/sqrt(d) scale"
    why: str  # one sentence: why it is wrong
    compute: Callable[[dict], Any]
    # Where numpy_impl does it right: (module, function or Class.method, text on the line).
    fix_at: tuple[str, str, str] | None = None
    # "mistake": a match is a FAIL that names it. "convention": a different but legitimate answer
    # (AdamW's decay after the Adam step, a -1e9 mask fill): a match passes, and the row says which
    # convention. "precision": the right maths computed in a lower precision somewhere (RoPE tables
    # built in float32 on float64 input): a match passes, and the row says where precision was lost.
    kind: str = "mistake"


@dataclass(frozen=True)
class Case:
    """One input setting. inputs(rng, dtype) returns NumPy arrays, dicts of arrays and JSON scalars."""
    name: str
    inputs: Callable[[np.random.Generator, np.dtype], dict]
    dtype: str = "float64"
    seed: int = 0
    course_tol: float | None = None  # the course's own pass mark (max |err|), shown beside ours


@dataclass(frozen=True)
class Exercise:
    name: str
    group: str  # "course-a", "course-b", ..., "blocks", "backward"
    signature: str  # as the user writes it: "split_heads(x, n_heads)"
    contract: str  # shapes in and out: "x (B, T, C) -> (B, n_heads, T, C // n_heads)"
    checks: str  # one sentence for `exercise show`: what is compared with what
    # Sent to the child (crosscheck.sandbox.worker.call_target): {"name", "args", "kwargs"} for a
    # function; {"kind": "class", "name", "init", "weights": {framework: [(attr path, input key)]},
    # "args"} for a class; {"kind": "value", "name"} for a module-level number; {"kind": "answer",
    # "name", "args", "with"?} for a value the user assigns or a function of args returning it.
    target: dict
    reference: Callable[[dict, dict], Any]  # (backend modules, inputs) -> output(s), as in crosscheck.cases
    cases: tuple[Case, ...]
    variants: tuple[Variant, ...] = ()
    outputs: tuple[str, ...] = ("out",)  # names of the returned arrays; more than one: a tuple
    backends: tuple[str, ...] = ("numpy", "jax", "torch")  # where the reference exists
    tol_kind: str = "value"  # row of triptych/common/tolerances.py: "value" or "grad"
    # Optional hooks. grade(case, inputs, outputs, refs) -> dict overriding the verdict fields (a
    # mask convention, a crafted query judged by its attention output) or None for the default.
    grade: Callable | None = None
    # static(tree, source) -> list of problems found by reading the file (a class that calls the
    # standalone functions it must not use).
    static: Callable | None = None
    # The stub `exercise new` writes, per framework; by default generated from the signature.
    skeleton: dict[str, str] = field(default_factory=dict)
    notes: str = ""  # anything `exercise show` should add (mask conventions accepted, ...)
    # Other exercises this one is built from (an end-to-end MHA from softmax and split_heads): when
    # both fail in one file, the report says to fix the part first.
    parts: tuple[str, ...] = ()
    # Outputs the user may leave out (attention weights beside `out`): returning the others alone, in
    # order, is graded on those. They must come last in `outputs`.
    optional_outputs: tuple[str, ...] = ()
    # Outputs that are attention scores before the softmax (-inf where masked): a finite fill (-1e9)
    # is judged, and mistakes are named, on their softmax over the last axis as well.
    scores: tuple[str, ...] = ()

    @property
    def defines(self) -> str:
        """The top-level name the user's file must define."""
        return self.target["name"]


def locate(fix_at: tuple[str, str, str] | None) -> str | None:
    """'numpy_impl/attention.py:95' for (module, function, text on the line): looked up in the source
    each time, so the pointer never goes stale when the file is edited."""
    if not fix_at:
        return None
    module_name, qualname, text = fix_at
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        lines, start = inspect.getsourcelines(obj)
    except (ImportError, AttributeError, OSError, TypeError):
        return None
    path = module_name.replace(".", "/") + ".py"
    for offset, line in enumerate(lines):
        if text in line:
            return f"{path}:{start + offset}"
    return f"{path}:{start}"
