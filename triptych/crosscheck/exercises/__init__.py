"""The catalogue of exercises `triptych check` grades, one module per group.

Each module defines GROUP (the name users type: "course-b"), TITLE, ORDER and EXERCISES (a list of
crosscheck.spec.Exercise). They are discovered here, so adding a group never edits a shared file.
Course exercises take the course's own signatures (that is the code students have); building
blocks take the numpy_impl signature of the same name.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from triptych.common.checks import InputError
from triptych.crosscheck.spec import Exercise


@lru_cache(maxsize=1)
def _modules() -> tuple:
    mods = [importlib.import_module(f"{__name__}.{info.name}")
            for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    return tuple(sorted(mods, key=lambda m: getattr(m, "ORDER", 100)))


def groups() -> dict[str, tuple[str, list[Exercise]]]:
    """{group name: (title, exercises)} in catalogue order."""
    return {m.GROUP: (m.TITLE, list(m.EXERCISES)) for m in _modules()}


def all_exercises() -> list[Exercise]:
    return [ex for _, exs in groups().values() for ex in exs]


def get(name: str) -> Exercise:
    """The exercise called `name` (its id, e.g. 'split_heads' or 'course-a.MultiHeadAttention')."""
    for ex in all_exercises():
        if name in (ex.name, f"{ex.group}.{ex.name}"):
            return ex
    known = ", ".join(ex.name for ex in all_exercises())
    raise InputError(f"exercise: expected one of {known}, got {name!r}")


def get_group(name: str) -> list[Exercise]:
    found = groups()
    if name not in found:
        raise InputError(f"group: expected one of {', '.join(found)}, got {name!r}")
    return found[name][1]
