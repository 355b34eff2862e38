"""Comments and docs speak of the project and the public world: papers, public repositories, files of
this repository. Not of a task tracker's numbers, a private brief or folder a reader does not have,
or the one computer a figure was measured on (dated figures with their hardware: docs/measurements.md)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("numpy_impl", "jax_impl", "torch_ref", "triptych", "parity_tests", "tests", "docs", "README.md", "Makefile")
SKIPPED = ("tests/submissions",)  # users' code as they wrote it, graded by the checker's tests
PATTERN = re.compile(r"issue [0-9]+|the brief|\.\./shared|shared/docs|this 2-core|this machine|2-core|[Ii]ssue #?[0-9]")


def _files():
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".py", ".md"))
        for p in candidates:
            rel = p.relative_to(ROOT).as_posix()
            if p != Path(__file__).resolve() and not rel.startswith(SKIPPED):
                yield rel, p


def test_no_comment_speaks_of_trackers_briefs_or_this_computer():
    hits = [f"{rel}:{i}: {line.strip()}" for rel, p in _files()
            for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if PATTERN.search(line)]
    assert hits == []


def test_the_pattern_catches_what_it_should():
    for bad in ("see issue 12", "Issue #3", "as the brief asks", "../shared/x", "shared/docs/a.md",
                "measured on this machine", "a 2-core CPU"):
        assert PATTERN.search(bad), bad
    assert not PATTERN.search("measured on 2 AMD EPYC cores, 2026-11-29 (docs/measurements.md)")
