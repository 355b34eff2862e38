"""Targets that drive an object instead of calling a function once, run in the sandboxed child.

Like worker.py this file imports only the standard library, NumPy and the user's framework: the
child loads it by its path (worker._kinds), under `python -I` or the user's own interpreter.
call(kind, obj, target, live, framework) returns arrays (or a tuple of arrays) for the parent to
judge; whatever the user's object does wrong raises, and the worker turns that into a verdict.
"""
from __future__ import annotations

KINDS: dict = {}


def call(kind: str, obj, target: dict, live: dict, framework: str):
    if kind not in KINDS:
        raise ValueError(f"target kind: expected one of {', '.join(sorted(KINDS)) or 'function, class'}, got {kind!r}")
    return KINDS[kind](obj, target, live, framework)
