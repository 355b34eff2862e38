"""Imports go down the floors, never up, and never in a circle.

    0  triptych.common                      tolerances, checks, io, locations, course data
    1  numpy_impl, jax_impl, torch_ref      the three backends: each imports only common and itself
    2  the rest of triptych                 models, training, lessons, checker, calculators, ...
       (and torch_ref.finetune, the fine-tuning program built on torch_ref: it reads the datasets
       of triptych.corpora, so it stands on this floor; its classifier, finetune/config.py and
       finetune/models.py, needs only torch, HF, peft and common and counts as torch_ref, whose
       bert_finetune.py referees numpy_impl's backward with it)
    3  triptych.commands                    one module per CLI command
    4  triptych.cli, triptych.__main__,     the programs: the CLI and the notebook magics
       triptych.notebook, triptych/__init__ (`%load_ext triptych`)

Every .py under triptych/, numpy_impl/, jax_impl/ and torch_ref/ is parsed; an import counts at any
depth (a function's lazy import too), and so does importlib.import_module("a.literal.name"). Within
a floor, packages may import one another but the package graph has no cycle.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOPS = ("triptych", "numpy_impl", "jax_impl", "torch_ref")
BACKENDS = ("numpy_impl", "jax_impl", "torch_ref")
PROGRAMS = ("triptych", "triptych.cli", "triptych.__main__", "triptych.notebook")
# The fine-tuning backend's classifier: torch, HF, peft and triptych.common only (the docstring).
FINETUNE_CLASSIFIER = ("torch_ref.finetune.config", "torch_ref.finetune.models")


def package(module: str) -> str | None:
    """The unit the floors speak of: a backend, a subpackage of triptych, or one of the programs."""
    parts = module.split(".")
    if parts[0] not in TOPS:
        return None  # a third-party or standard-library module
    if parts[0] == "torch_ref" and parts[1:2] == ["finetune"]:
        return "torch_ref" if ".".join(parts[:3]) in FINETUNE_CLASSIFIER else "torch_ref.finetune"
    if parts[0] in BACKENDS:
        return parts[0]
    return ".".join(parts[:2])


def floor(pkg: str) -> int:
    if pkg == "triptych.common":
        return 0
    if pkg in BACKENDS:
        return 1
    if pkg == "triptych.commands":
        return 3
    if pkg in PROGRAMS:
        return 4
    return 2


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base[: len(base) - node.level + (1 if is_package else 0)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module
        # `from triptych import lessons` imports the package triptych.lessons, not the root.
        return [f"{source}.{a.name}" if source in TOPS else source for a in node.names]
    if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> ["file:line name", ...], across packages only."""
    edges = defaultdict(list)
    for top in TOPS:
        for path in sorted((ROOT / top).rglob("*.py")):
            module = _module_name(path)
            src = package(module)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                for target in _targets(node, module, path.name == "__init__.py"):
                    dst = package(target)
                    if dst is not None and dst != src:
                        edges[(src, dst)].append(f"{path.relative_to(ROOT)}:{node.lineno} {target}")
    return edges


EDGES = import_edges()


def test_the_scan_sees_the_known_imports():
    """Guards the scanner itself: imports this repository is known to make are found."""
    assert ("numpy_impl", "triptych.common") in EDGES
    assert ("triptych.commands", "triptych.crosscheck") in EDGES
    assert ("triptych.cli", "triptych.commands") in EDGES
    assert ("triptych.lessons", "numpy_impl") in EDGES  # some are lazy, inside functions


@pytest.mark.parametrize("pkg", sorted({p for edge in EDGES for p in edge}))
def test_no_package_imports_a_higher_floor(pkg):
    upward = [f"{where} (floor {floor(pkg)} -> {floor(dst)})"
              for (src, dst), wheres in sorted(EDGES.items()) if src == pkg and floor(dst) > floor(pkg)
              for where in wheres]
    assert upward == []


def test_the_backends_import_only_common_and_themselves():
    sideways = [where for (src, dst), wheres in sorted(EDGES.items())
                if src in BACKENDS and dst != "triptych.common" for where in wheres]
    assert sideways == []


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_within_a_floor():
    graph = defaultdict(set)
    for src, dst in EDGES:
        if floor(src) == floor(dst):
            graph[src].add(dst)
    cycle = _cycle(graph)
    detail = [] if cycle is None else [EDGES[(a, b)][0] for a, b in zip(cycle, cycle[1:])]
    assert cycle is None, f"import cycle {' -> '.join(cycle)}: {detail}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
