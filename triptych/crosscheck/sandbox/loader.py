"""Loading a user's submission as it is, in the sandboxed child.

Real code comes in three forms, each loaded the way its author runs it:
- a module of a package (`cs336_basics/model.py` with `from .nn import Linear`, CS336's
  `tests/adapters.py`): the topmost folder with an __init__.py is the package, its parent goes on
  sys.path, and the file is imported as `pkg.sub.module` with importlib, so relative imports work;
- a lone file or a notebook export: its folder on sys.path, then each top-level statement runs on
  its own, in order, in one module namespace. A statement that raises (a print of a name from a
  deleted cell) or runs too long (a training loop) is skipped and listed; the rest survive, so
  `DEVICE = "cuda" if torch.cuda.is_available() else "cpu"` and helper constants are still there.
  The module is named "submission", so `if __name__ == "__main__":` blocks do not run;
- an uninstalled project (pyproject.toml, never `pip install -e`d) whose __init__ asks
  importlib.metadata for its own version: the lookup answers with the pyproject's version.

Like worker.py it imports only the standard library (the child runs under `python -I`, maybe under
the user's own interpreter), and is loaded by its path; the parent imports it too, to find a
submission's root and package without running anything.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
import re
import signal
import sys
import threading
import time
import types

MODULE_NAME = "submission"
# A top-level statement that takes longer than this is a training loop or a download, not a
# definition the exercises need: it is interrupted and skipped. Real definitions and constants run
# in milliseconds; a few seconds leave room for a slow or busy machine.
STATEMENT_TIMEOUT_S = 4.0
# All timed-out statements together stop here, well inside the parent's 60 s wait for the child to
# be ready (runner.LOAD_TIMEOUT_S): after it, each remaining statement gets a short moment only.
LOAD_BUDGET_S = 30.0
_AFTER_BUDGET_S = 0.2
PROJECT_FILES = ("pyproject.toml", "setup.py", "setup.cfg")


# ---------------------------------------------------------------- reading

def read_source(path: str) -> tuple[str, list[tuple[int, int]]]:
    """The file's Python source. A notebook (.ipynb) gives its code cells in order; IPython lines
    (`!pip install`, `%matplotlib`) are blanked so the rest still compiles. Also returns, for a
    notebook, (first line, cell number) pairs so tracebacks and notes can say which cell."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not path.endswith(".ipynb"):
        return text, []
    nb = json.loads(text)
    lines, cells = [], []
    for n, cell in enumerate(c for c in nb.get("cells", []) if c.get("cell_type") == "code"):
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        cells.append((len(lines) + 1, n + 1))
        for line in src.splitlines():
            lines.append("" if line.lstrip().startswith(("!", "%")) else line)
        lines.append("")
    return "\n".join(lines) + "\n", cells


# ---------------------------------------------------------------- where a submission lives

def is_package(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "__init__.py"))


def is_project(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in PROJECT_FILES)


def locate(path: str) -> tuple[str, str | None, list[str]]:
    """(root, dotted module name or None, folders for sys.path) of a submission file.

    In a package: root = the parent of the topmost folder with __init__.py, the module is imported
    by its dotted name (CS336's tests/ has an __init__.py: adapters.py is `tests.adapters`, and the
    repository on sys.path lets `from cs336_basics.model import ...` find the uninstalled package).
    Otherwise the file's own folder, as before packages were understood."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if path.endswith(".py") and is_package(folder):
        top = folder
        while is_package(os.path.dirname(top)) and os.path.dirname(top) != top:
            top = os.path.dirname(top)
        root = os.path.dirname(top)
        rel = os.path.relpath(path[:-3], root).split(os.sep)
        if rel[-1] == "__init__":
            rel = rel[:-1]
        extra = [os.path.join(root, "src")] if os.path.isdir(os.path.join(root, "src")) else []
        return root, ".".join(rel), [root, *extra]
    return folder, None, [folder]


def local_packages(root: str) -> set[str]:
    """Names of the top-level packages of the submission's tree (root/ and root/src/)."""
    found = set()
    for base in (root, os.path.join(root, "src")):
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        found.update(e for e in entries if is_package(os.path.join(base, e)))
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def project_version(root: str) -> str:
    """[project] version of root/pyproject.toml, or "0.0.0"."""
    try:
        with open(os.path.join(root, "pyproject.toml"), encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "0.0.0"
    m = re.search(r'^\s*version\s*=\s*["\']([^"\']+)["\']', text.split("[project]", 1)[-1], re.M)
    return m.group(1) if m else "0.0.0"


def shim_metadata(root: str) -> None:
    """importlib.metadata.version / distribution answer for the submission's own uninstalled
    packages (CS336's stock __init__: `__version__ = importlib.metadata.version("cs336_basics")`)
    instead of raising PackageNotFoundError; every other name is looked up as usual."""
    md = importlib.metadata
    names, version = {_normal(n) for n in local_packages(root)}, project_version(root)
    real_version, real_distribution = md.version, md.distribution

    class _Local(md.Distribution):
        def __init__(self, name):
            self._name = name

        def read_text(self, filename):
            if filename == "METADATA":
                return f"Metadata-Version: 2.1\nName: {self._name}\nVersion: {version}\n"
            return None

        def locate_file(self, path):
            return os.path.join(root, str(path))

    def distribution(name):
        try:
            return real_distribution(name)
        except md.PackageNotFoundError:
            if _normal(name) in names:
                return _Local(name)
            raise

    def version_of(name):
        try:
            return real_version(name)
        except md.PackageNotFoundError:
            if _normal(name) in names:
                return version
            raise

    md.version, md.distribution = version_of, distribution


# ---------------------------------------------------------------- running

class StatementTimeout(BaseException):
    """Raised by the alarm inside a top-level statement that runs too long. A BaseException so a
    training loop's `except Exception:` does not swallow it."""


def _first_line(source_lines: list[str], node: ast.stmt) -> str:
    text = source_lines[node.lineno - 1].strip() if node.lineno - 1 < len(source_lines) else ""
    return text if len(text) <= 60 else text[:57] + "..."


def _cell_of(line: int, cells: list[tuple[int, int]]) -> int | None:
    found = None
    for first, n in cells:
        if first <= line:
            found = n
    return found


def run_statements(source: str, path: str, namespace: dict, cells=()) -> list[dict]:
    """Execute the module's top-level statements one at a time; return the skipped ones as
    {"line", "cell", "text", "type"}. Definitions see the globals of earlier statements, as in a
    normal import."""
    tree = ast.parse(source, filename=path)
    lines = source.splitlines()
    skipped = []
    alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    state = {"armed": False}

    def on_alarm(signum, frame):
        if state["armed"]:
            raise StatementTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm) if alarm else None
    budget_end = time.monotonic() + LOAD_BUDGET_S
    try:
        for node in tree.body:
            code = compile(ast.Module(body=[node], type_ignores=[]), path, "exec")
            # Imports are the parent's load timeout's business: a first `import jax` can take
            # longer than a statement may, and is no training loop.
            timed = alarm and not isinstance(node, (ast.Import, ast.ImportFrom))
            try:
                try:
                    if timed:
                        left = budget_end - time.monotonic()
                        limit = STATEMENT_TIMEOUT_S if left >= STATEMENT_TIMEOUT_S else max(left, _AFTER_BUDGET_S)
                        state["armed"] = True
                        # Re-fires every half second until disarmed, in case the code caught the first.
                        signal.setitimer(signal.ITIMER_REAL, limit, 0.5)
                    exec(code, namespace)
                finally:
                    state["armed"] = False
                    if timed:
                        signal.setitimer(signal.ITIMER_REAL, 0)
            except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
                why = f"took over {STATEMENT_TIMEOUT_S:g} s" if isinstance(exc, StatementTimeout) else type(exc).__name__
                skipped.append({"line": node.lineno, "cell": _cell_of(node.lineno, list(cells)),
                                "text": _first_line(lines, node), "type": why})
    finally:
        if alarm:
            signal.signal(signal.SIGALRM, previous)
    return skipped


# ---------------------------------------------------------------- what a real project imports

# At most this many absent third-party modules get stand-ins: a project that lacks more is better
# run under its own interpreter (--python), and the load error says so.
MAX_STANDINS = 8


class _StandInType(type):
    """Attributes of a stand-in are stand-ins too (`wandb.sdk.Run`), so a module that only names
    them at import time (annotations, base classes, defaults) still loads."""

    def __getattr__(cls, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _stand_in(f"{cls.__qualname__}.{attr}")


def _stand_in(qualname: str) -> type:
    top = qualname.split(".")[0]

    def refuse(self, *args, **kwargs):
        raise ModuleNotFoundError(f"{qualname} is not available: `{top}` is not installed for the Python running "
                                  f"your code (--python PATH runs it under your own environment)", name=top)
    return _StandInType(qualname.rsplit(".", 1)[-1], (), {"__init__": refuse, "__qualname__": qualname})


class _StandInModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _stand_in(f"{self.__name__}.{attr}")


FINDER = None  # the one _Finder of this child, once load() has run


class _Finder:
    """Last on sys.meta_path, so it is asked only about imports every other finder failed:
    - a module of the submission whose file differs only in case (`import ...RoPE` of Rope.py):
      found on macOS and Windows, where the author ran it, not on Linux; loaded, and reported;
    - a third-party module this Python lacks (wandb, pynvml: a project's training-time extras),
      only once loading failed on it: a stand-in that raises when used, and reported."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.case_fixes: list[str] = []
        self.standins: set[str] = set()
        self.absent_names: list[str] = []  # names given stand-ins in libraries that lack them

    def _ours(self, folder: str) -> bool:
        folder = os.path.realpath(folder)
        return folder == self.root or folder.startswith(self.root + os.sep)

    def find_spec(self, fullname, path=None, target=None):
        import importlib.machinery
        import importlib.util
        if fullname.split(".")[0] in self.standins:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        last = fullname.rsplit(".", 1)[-1].lower()
        for folder in (path if path is not None else sys.path):
            if not isinstance(folder, str) or not os.path.isdir(folder) or not self._ours(folder):
                continue
            try:
                entries = sorted(os.listdir(folder))
            except OSError:  # the class folder of a lone file: the isolated child may not list it
                continue
            for entry in entries:
                full = os.path.join(folder, entry)
                if entry.lower() == last + ".py" and os.path.isfile(full):
                    spec = importlib.util.spec_from_file_location(fullname, full)
                elif entry.lower() == last and is_package(full):
                    spec = importlib.util.spec_from_file_location(fullname, os.path.join(full, "__init__.py"),
                                                                  submodule_search_locations=[full])
                else:
                    continue
                self.case_fixes.append(f"`{fullname}` is {os.path.relpath(full, self.root)}")
                return spec
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _absent_third_party(exc: BaseException, root: str) -> str | None:
    """The top-level name of a module the user's code imports that no finder has and that is not
    part of the submission, or None."""
    name = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if not name:
        return None
    top = name.split(".")[0]
    return None if top in local_packages(root) or top in sys.modules else top


def _import_with_standins(dotted: str, root: str, finder: _Finder):
    """Import the submission's module. When it fails on an absent third-party module, or on a name
    that this version of a library lacks, forget the submission's half-imported modules and try
    again with a stand-in for it."""
    while True:
        try:
            return importlib.import_module(dotted)
        except ImportError as exc:
            if len(finder.standins) + len(finder.absent_names) >= MAX_STANDINS:
                raise
            top = _absent_third_party(exc, root)
            # `from torch.serialization import FILE_LIKE`: a name of the library version the project
            # pins (torch 2.6) that this one no longer has; usually a type for annotations.
            found = re.match(r"cannot import name '(\w+)' from '([\w.]+)'", str(exc))
            owner = sys.modules.get(found.group(2)) if found else None
            if top is not None:
                finder.standins.add(top)
            elif owner is not None and found.group(2).split(".")[0] not in local_packages(root):
                setattr(owner, found.group(1), _stand_in(f"{found.group(2)}.{found.group(1)}"))
                finder.absent_names.append(f"{found.group(2)}.{found.group(1)}")
            else:
                raise
        ours = local_packages(root)
        for name in [n for n in sys.modules if n.split(".")[0] in ours]:
            del sys.modules[name]


def prepare_subprocess(root: str, standins: list[str], absent_names: list[str]) -> None:
    """In a process the user's code started (multiprocessing spawn or forkserver): the metadata
    answers, the finder and the stand-ins the loading process had, so the user's package imports
    the same way."""
    global FINDER
    shim_metadata(root)
    FINDER = _Finder(root)
    FINDER.standins.update(standins)
    sys.meta_path.append(FINDER)
    for dotted in absent_names:
        owner, name = dotted.rsplit(".", 1)
        try:
            setattr(importlib.import_module(owner), name, _stand_in(dotted))
        except ImportError:
            pass  # the import fails here as it would in the user's own process


def load(path: str) -> tuple[types.ModuleType, dict]:
    """Load the submission file; returns (module, {"root", "skipped", "package", "standins",
    "case_fixes"})."""
    path = os.path.abspath(path)
    root, dotted, folders = locate(path)
    for folder in reversed(folders):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    shim_metadata(root)
    global FINDER
    finder = FINDER = _Finder(root)
    sys.meta_path.append(finder)
    if dotted is not None:
        # Imported as its package imports it: a failure here is the user's own import error.
        module = _import_with_standins(dotted, root, finder)
        return module, {"root": root, "skipped": [], "package": dotted, "standins": sorted(finder.standins),
                        "absent_names": finder.absent_names, "case_fixes": finder.case_fixes}
    source, cells = read_source(path)
    module = types.ModuleType(MODULE_NAME)
    module.__file__ = path
    sys.modules[MODULE_NAME] = module
    skipped = run_statements(source, path, module.__dict__, cells)
    return module, {"root": root, "skipped": skipped, "package": None, "standins": [], "absent_names": [],
                    "case_fixes": finder.case_fixes}


def frameworks_loaded() -> list[str]:
    """Which frameworks the loaded code actually imported (directly or through its own package)."""
    return [name for name in ("torch", "jax") if name in sys.modules]
