"""The catalogue of exercises `triptych check` grades, one pack per group.

A pack is a module that defines GROUP (the name users type: "course-b"), TITLE, optionally ORDER, and
EXERCISES (a list of triptych.crosscheck.spec.Exercise). Three places hold packs, and all of them go
through the same `load_pack`, so a teacher's pack is graded by exactly the machinery of the built-in
groups:
    built in      the modules of this package (course_a.py, blocks.py, cs336.py, ...)
    installed     packages that declare an entry point in the group "triptych.exercises"
                  (pyproject.toml: [project.entry-points."triptych.exercises"] my-course = "my_course")
    on request    `check --pack my_course.py` / `exercise list --pack my_course.py` (use_packs)
Course exercises take the course's own signatures (that is the code students have); building blocks
take the numpy_impl signature of the same name. docs/examples/local_attention_pack.py is a small pack.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from functools import lru_cache
from importlib.metadata import entry_points
from types import ModuleType

from triptych.common.checks import InputError
from triptych.crosscheck.spec import Exercise

ENTRY_POINT_GROUP = "triptych.exercises"
_requested: list[ModuleType] = []  # packs named with use_packs, in the order given


def _import_file(path: str) -> ModuleType:
    """A pack given as a .py file: imported under a private name, its folder on sys.path so that the
    pack can import its own helper modules."""
    if not os.path.isfile(path):
        raise InputError(f"pack: expected a .py file or an importable module name, got {path!r} (no such file)")
    folder = os.path.dirname(os.path.abspath(path))
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"_triptych_pack_{os.path.splitext(os.path.basename(path))[0]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def validate_pack(module: ModuleType, where: str) -> ModuleType:
    """The contract of a pack, checked once for every source: one line naming what is missing."""
    missing = [n for n in ("GROUP", "TITLE", "EXERCISES") if not hasattr(module, n)]
    if missing:
        raise InputError(f"pack {where}: expected GROUP, TITLE and EXERCISES, got a module without "
                         f"{', '.join(missing)}")
    if not isinstance(module.GROUP, str) or not module.GROUP:
        raise InputError(f"pack {where}: expected GROUP to be a non-empty string, got {module.GROUP!r}")
    for ex in module.EXERCISES:
        if not isinstance(ex, Exercise):
            raise InputError(f"pack {where}: expected EXERCISES to hold triptych.crosscheck.spec.Exercise, "
                             f"got {type(ex).__name__}")
        if ex.group != module.GROUP:
            raise InputError(f"pack {where}: exercise {ex.name!r} has group {ex.group!r}, expected the "
                             f"pack's GROUP {module.GROUP!r}")
    return module


def load_pack(source: str) -> ModuleType:
    """A pack from a .py file path or an importable module name, validated. A pack that fails to
    import is the teacher's error, named in one line, not a traceback of ours."""
    try:
        if source.endswith(".py") or os.sep in source:
            module = _import_file(source)
        else:
            module = importlib.import_module(source)
    except InputError:
        raise
    except Exception as e:  # the pack's own code failed: say so, with its message
        raise InputError(f"pack {source}: failed to load: {type(e).__name__}: {e}") from e
    return validate_pack(module, source)


@lru_cache(maxsize=1)
def _builtin() -> tuple:
    return tuple(load_pack(f"{__name__}.{info.name}")
                 for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


@lru_cache(maxsize=1)
def _installed() -> tuple:
    packs = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        packs.append(load_pack(ep.value.split(":")[0]))
    return tuple(packs)


def use_packs(sources) -> list[str]:
    """Add packs for this run (check --pack FILE); returns their group names. A group name that is
    already taken is refused: two groups of one name would make `exercise new GROUP` ambiguous."""
    names = []
    for source in sources or ():
        module = load_pack(source)
        # The same file asked for again (a notebook cell run twice, the pack edited between): it
        # replaces its earlier load instead of clashing with it.
        _requested[:] = [m for m in _requested if not _same_file(m, module)]
        taken = {m.GROUP for m in _packs() if m is not module}
        if module.GROUP in taken:
            raise InputError(f"pack {source}: expected a new group name, got {module.GROUP!r}, which is "
                             f"already a group (exercise list names them)")
        if module not in _requested:
            _requested.append(module)
        names.append(module.GROUP)
    return names


def _same_file(a: ModuleType, b: ModuleType) -> bool:
    fa, fb = getattr(a, "__file__", None), getattr(b, "__file__", None)
    return bool(fa and fb) and os.path.realpath(fa) == os.path.realpath(fb)


def _packs() -> list[ModuleType]:
    packs = [*_builtin(), *_installed(), *_requested]
    return sorted(packs, key=lambda m: getattr(m, "ORDER", 100))


def groups() -> dict[str, tuple[str, list[Exercise]]]:
    """{group name: (title, exercises)} in catalogue order."""
    return {m.GROUP: (m.TITLE, list(m.EXERCISES)) for m in _packs()}


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
