"""Size limits of the library code: a file at most 400 lines, a function at most 60, so each reads in
one sitting, and a long one is split by idea into a short driver and named steps.

Counted from the source itself: a file's lines, and a function's lines from its `def` (decorators
excluded) to its last line, nested functions and methods included, as ast reports them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("triptych", "numpy_impl", "jax_impl", "torch_ref")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

# Known offenders, each with why it is still here. Every entry must still be over its limit (the
# test below fails on a stale one), so the list only shrinks.
FILE_ALLOWLIST: dict[str, str] = {}
FUNCTION_ALLOWLIST: dict[str, str] = {}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def file_lengths() -> dict[str, int]:
    return {_rel(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _sources()}


def function_lengths() -> dict[str, int]:
    """{'path::name': lines} for every def in the packages (the longest, if a name repeats in a file)."""
    lengths: dict[str, int] = {}
    for p in _sources():
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"), filename=str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{_rel(p)}::{node.name}"
                lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    return lengths


def test_the_packages_are_found():
    files = file_lengths()
    for pkg in PACKAGES:
        assert any(f.startswith(pkg + "/") for f in files), pkg
    assert "triptych/cli.py" in files


def test_files_are_at_most_400_lines():
    over = {f: n for f, n in file_lengths().items() if n > MAX_FILE_LINES and f not in FILE_ALLOWLIST}
    assert not over, f"files over {MAX_FILE_LINES} lines (split them by idea): {over}"


def test_functions_are_at_most_60_lines():
    over = {f: n for f, n in function_lengths().items() if n > MAX_FUNCTION_LINES and f not in FUNCTION_ALLOWLIST}
    assert not over, f"functions over {MAX_FUNCTION_LINES} lines (a short driver and named steps): {over}"


@pytest.mark.parametrize("allowlist, lengths, limit", [
    (FILE_ALLOWLIST, file_lengths, MAX_FILE_LINES),
    (FUNCTION_ALLOWLIST, function_lengths, MAX_FUNCTION_LINES),
], ids=["files", "functions"])
def test_allowlists_hold_only_current_offenders(allowlist, lengths, limit):
    found = lengths()
    stale = [k for k in allowlist if found.get(k, 0) <= limit]
    assert not stale, f"no longer over {limit} lines (or gone): remove from the allowlist: {stale}"


def test_the_counter_measures_a_known_function():
    # The ruler itself: a function written here with a known number of lines.
    body = "\n".join(f"    x{i} = {i}" for i in range(8))
    src = f"def f():\n{body}\n    return 0\n"
    node = ast.parse(src).body[0]
    assert node.end_lineno - node.lineno + 1 == 10 == len(src.splitlines())
